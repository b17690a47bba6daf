-- Alert acknowledgements by people (alert.acknowledged, written by fleetstream serve): the time-to-acknowledge input.
-- An alert acknowledged twice keeps both rows; readers take the earliest per alert_id.
CREATE TABLE IF NOT EXISTS fleetstream.alert_acks
(
    org_id          LowCardinality(String),
    key             String,
    alert_id        String,
    user_id         String,
    acked_at        DateTime64(3, 'UTC'),
    note            String CODEC(ZSTD),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(acked_at)
ORDER BY (org_id, key, alert_id, acked_at)
TTL toDateTime(acked_at) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
