-- Per channel and unit: vehicles, samples, min, max, mean, exact p95 and flagged (out of warning range) samples.
SELECT
    channel,
    unit,
    uniqExact(vehicle_id) AS vehicles,
    count() AS samples,
    min(value) AS min_value,
    max(value) AS max_value,
    round(avg(value), 4) AS mean_value,
    quantileExact(0.95)(value) AS p95_value,
    countIf(flags != 0) AS flagged
FROM fleetstream.samples
WHERE ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)}
  AND ({vehicle:String} = '' OR vehicle_id = {vehicle:String})
GROUP BY channel, unit
ORDER BY channel, unit
