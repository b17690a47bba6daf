-- Samples stored per vehicle (or dyno station) and channel in a time range, with the first and last sample time.
SELECT
    vehicle_id,
    channel,
    any(unit) AS unit,
    count() AS samples,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM fleetstream.samples
WHERE ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)}
  AND ({vehicle:String} = '' OR vehicle_id = {vehicle:String})
GROUP BY vehicle_id, channel
ORDER BY vehicle_id, channel
