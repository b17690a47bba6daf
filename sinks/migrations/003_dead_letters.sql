-- Every dead letter of every stage (dlq.* topics, and records the sink itself could not decode).
-- ReplacingMergeTree on the source coordinates: upstream stages are at-least-once, so a dead letter
-- re-sent after a restart collapses into one row (read with FINAL for exact counts).
CREATE TABLE IF NOT EXISTS fleetstream.dead_letters
(
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    key              String,
    stage            LowCardinality(String),
    error_code       LowCardinality(String),
    reason           String CODEC(ZSTD),
    sample_count     UInt32,
    first_seen       DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    attempt          UInt16,
    original         String CODEC(ZSTD(3)),
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt16,
    kafka_offset     UInt64 CODEC(Delta, ZSTD),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(first_seen)
ORDER BY (source_topic, source_partition, source_offset, stage, error_code)
TTL toDateTime(first_seen) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
