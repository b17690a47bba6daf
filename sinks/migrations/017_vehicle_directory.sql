-- Which org each vehicle (or dyno station) id belongs to, kept by views on samples and dtcs: the read side
-- scopes the tables that carry no org (kpis, alerts, window_aggregates) through it. Small: one row per
-- (vehicle, org, fleet) after merges; read with GROUP BY. Duplicated rows are harmless here (min/max).
CREATE TABLE IF NOT EXISTS fleetstream.vehicle_directory
(
    vehicle_id  String,
    org_id      LowCardinality(String),
    fleet_id    LowCardinality(String),
    first_seen  SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (vehicle_id, org_id, fleet_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS fleetstream.vehicle_directory_samples_mv TO fleetstream.vehicle_directory AS
SELECT vehicle_id, org_id, fleet_id, min(ts) AS first_seen, max(ts) AS last_seen
FROM fleetstream.samples
GROUP BY vehicle_id, org_id, fleet_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS fleetstream.vehicle_directory_dtcs_mv TO fleetstream.vehicle_directory AS
SELECT vehicle_id, org_id, fleet_id, min(ts) AS first_seen, max(ts) AS last_seen
FROM fleetstream.dtcs
GROUP BY vehicle_id, org_id, fleet_id;

-- the vehicles stored before this migration (a re-run after an interruption adds rows that merge away)
INSERT INTO fleetstream.vehicle_directory
SELECT vehicle_id, org_id, fleet_id, min(ts), max(ts) FROM fleetstream.samples GROUP BY vehicle_id, org_id, fleet_id;

INSERT INTO fleetstream.vehicle_directory
SELECT vehicle_id, org_id, fleet_id, min(ts), max(ts) FROM fleetstream.dtcs GROUP BY vehicle_id, org_id, fleet_id;
