-- Dyno runs per station: duration, samples, peak power and torque, maximum engine speed and mean AFR.
SELECT
    vehicle_id AS station,
    run_id,
    min(ts) AS started,
    max(ts) AS ended,
    round(dateDiff('millisecond', min(ts), max(ts)) / 1000, 3) AS duration_s,
    count() AS samples,
    maxIf(value, channel = 'power') AS peak_hp,
    maxIf(value, channel = 'torque') AS peak_torque_ftlb,
    maxIf(value, channel = 'engine_speed') AS max_rpm,
    round(avgIf(value, channel = 'afr'), 3) AS mean_afr
FROM fleetstream.samples
WHERE run_id != ''
  AND ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)}
  AND ({vehicle:String} = '' OR vehicle_id = {vehicle:String})
GROUP BY station, run_id
ORDER BY started, station, run_id
