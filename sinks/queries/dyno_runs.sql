-- Dyno runs per station: duration, samples, peak power and torque, maximum engine speed and mean AFR, each only
-- from samples in the unit it reports (a channel stored with an unknown unit is no hp, ft-lb, rpm or AFR).
SELECT
    vehicle_id AS station,
    run_id,
    min(ts) AS started,
    max(ts) AS ended,
    round(dateDiff('millisecond', min(ts), max(ts)) / 1000, 3) AS duration_s,
    count() AS samples,
    maxIf(value, channel = 'power' AND unit = 'hp') AS peak_hp,
    maxIf(value, channel = 'torque' AND unit = 'ft-lb') AS peak_torque_ftlb,
    maxIf(value, channel = 'engine_speed' AND unit = 'rpm') AS max_rpm,
    round(avgIf(value, channel = 'afr' AND unit = 'AFR'), 3) AS mean_afr
FROM fleetstream.samples
WHERE run_id != ''
  AND ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)}
  AND ({vehicle:String} = '' OR vehicle_id = {vehicle:String})
GROUP BY station, run_id
ORDER BY started, station, run_id
