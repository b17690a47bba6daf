-- One vehicle minute by minute: samples, min, max and mean per channel (from the 1-minute rollup).
-- requires: vehicle
SELECT
    minute,
    channel,
    any(unit) AS unit,
    sum(samples) AS samples,
    min(min_value) AS min_value,
    max(max_value) AS max_value,
    round(sum(sum_value) / nullIf(sum(value_count), 0), 4) AS mean_value
FROM fleetstream.samples_1m
WHERE vehicle_id = {vehicle:String}
  AND minute >= toStartOfMinute({from:DateTime64(3)}) AND minute < {to:DateTime64(3)}
GROUP BY minute, channel
ORDER BY minute, channel
