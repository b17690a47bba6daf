-- KPI values per vehicle, fleet or dyno run and period (analytics.kpi).
CREATE TABLE IF NOT EXISTS fleetstream.kpis
(
    scope           LowCardinality(String),
    scope_id        String,
    name            LowCardinality(String),
    value           Float64,
    unit            LowCardinality(String),
    period_start    DateTime64(3, 'UTC'),
    period_end      DateTime64(3, 'UTC'),
    dimensions      Map(String, String),
    computed_at     DateTime64(3, 'UTC'),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(period_start)
ORDER BY (scope, scope_id, name, period_start)
TTL toDateTime(period_start) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
