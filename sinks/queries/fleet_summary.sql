-- Per organization and fleet: vehicles, channels, samples and active hours in a time range (from the hourly rollup).
SELECT
    org_id,
    fleet_id,
    uniqExact(vehicle_id) AS vehicles,
    uniqExact(channel) AS channels,
    sum(samples) AS samples,
    uniqExact(vehicle_id, hour) AS vehicle_hours,
    min(hour) AS first_hour,
    max(hour) AS last_hour
FROM fleetstream.samples_1h
WHERE hour >= toStartOfHour({from:DateTime64(3)}) AND hour < {to:DateTime64(3)}
  AND ({vehicle:String} = '' OR vehicle_id = {vehicle:String})
GROUP BY org_id, fleet_id
ORDER BY org_id, fleet_id
