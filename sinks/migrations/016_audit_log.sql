-- Every request to fleetstream serve (audit.log): who, which tenant, what, with which outcome and how long it took.
CREATE TABLE IF NOT EXISTS fleetstream.audit_log
(
    org_id          LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    request_id      String,
    user_id         String,
    role            LowCardinality(String),
    auth            LowCardinality(String),
    method          LowCardinality(String),
    path            String CODEC(ZSTD),
    query           String CODEC(ZSTD),
    status          UInt16,
    duration_ms     Float64,
    client          String,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, user_id, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
