-- Alert events (fired, resolved) from analytics.threshold.exceeded; one episode shares one alert_id.
CREATE TABLE IF NOT EXISTS fleetstream.alerts
(
    alert_id        String,
    event           LowCardinality(String),
    kind            LowCardinality(String),
    rule_id         LowCardinality(String),
    key             String,
    channel         LowCardinality(String),
    severity        LowCardinality(String),
    comparator      LowCardinality(String),
    threshold       Nullable(Float64),
    value           Nullable(Float64),
    started         DateTime64(3, 'UTC'),
    ended           Nullable(DateTime64(3, 'UTC')),
    message         String,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(started)
ORDER BY (key, channel, started, alert_id)
TTL toDateTime(started) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
