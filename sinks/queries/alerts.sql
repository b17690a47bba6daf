-- Alert episodes started in a time range: when they fired, whether and when they resolved, the worst value seen.
SELECT
    alert_id,
    any(key) AS vehicle,
    any(channel) AS channel,
    any(rule_id) AS rule_id,
    any(severity) AS severity,
    min(started) AS started_at,
    maxIf(ended, event = 'resolved') AS resolved_at,
    if(countIf(event = 'resolved') > 0, 'resolved', 'open') AS state,
    round(dateDiff('millisecond', min(started), maxIf(ended, event = 'resolved')) / 1000, 3) AS duration_s,
    max(value) AS max_value,
    any(threshold) AS threshold
FROM fleetstream.alerts
WHERE started >= {from:DateTime64(3)} AND started < {to:DateTime64(3)}
  AND ({vehicle:String} = '' OR key = {vehicle:String})
GROUP BY alert_id
ORDER BY started_at, alert_id
