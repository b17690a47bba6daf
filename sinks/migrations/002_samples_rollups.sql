-- 1-minute and 1-hour rollups of samples, kept up to date by materialized views on insert.
-- SimpleAggregateFunction columns merge by min/max/sum in the background; read them with the same
-- functions and GROUP BY (mean = sum_value / value_count). The rollups keep a deduplication window too: with
-- deduplicate_blocks_in_dependent_materialized_views the replayed insert's view blocks are recognised here,
-- without it a replay stored once in samples would be counted twice in the rollups.
CREATE TABLE IF NOT EXISTS fleetstream.samples_1m
(
    org_id      LowCardinality(String),
    fleet_id    LowCardinality(String),
    vehicle_id  String,
    source      LowCardinality(String),
    channel     LowCardinality(String),
    unit        LowCardinality(String),
    minute      DateTime('UTC') CODEC(DoubleDelta, ZSTD),
    samples     SimpleAggregateFunction(sum, UInt64),
    value_count SimpleAggregateFunction(sum, UInt64),
    min_value   SimpleAggregateFunction(min, Nullable(Float64)),
    max_value   SimpleAggregateFunction(max, Nullable(Float64)),
    sum_value   SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(minute)
ORDER BY (org_id, vehicle_id, channel, minute, fleet_id, source, unit)
TTL minute + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS fleetstream.samples_1m_mv TO fleetstream.samples_1m AS
SELECT org_id, fleet_id, vehicle_id, source, channel, unit,
       toStartOfMinute(ts) AS minute,
       count() AS samples,
       count(value) AS value_count,
       min(value) AS min_value,
       max(value) AS max_value,
       sum(ifNull(value, 0)) AS sum_value
FROM fleetstream.samples
GROUP BY org_id, fleet_id, vehicle_id, source, channel, unit, minute;

CREATE TABLE IF NOT EXISTS fleetstream.samples_1h
(
    org_id      LowCardinality(String),
    fleet_id    LowCardinality(String),
    vehicle_id  String,
    source      LowCardinality(String),
    channel     LowCardinality(String),
    unit        LowCardinality(String),
    hour        DateTime('UTC') CODEC(DoubleDelta, ZSTD),
    samples     SimpleAggregateFunction(sum, UInt64),
    value_count SimpleAggregateFunction(sum, UInt64),
    min_value   SimpleAggregateFunction(min, Nullable(Float64)),
    max_value   SimpleAggregateFunction(max, Nullable(Float64)),
    sum_value   SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (org_id, vehicle_id, channel, hour, fleet_id, source, unit)
TTL hour + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS fleetstream.samples_1h_mv TO fleetstream.samples_1h AS
SELECT org_id, fleet_id, vehicle_id, source, channel, unit,
       toStartOfHour(ts) AS hour,
       count() AS samples,
       count(value) AS value_count,
       min(value) AS min_value,
       max(value) AS max_value,
       sum(ifNull(value, 0)) AS sum_value
FROM fleetstream.samples
GROUP BY org_id, fleet_id, vehicle_id, source, channel, unit, hour;
