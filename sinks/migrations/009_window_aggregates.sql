-- Closed event-time windows from the streams (telemetry.windows); window_end is exclusive.
CREATE TABLE IF NOT EXISTS fleetstream.window_aggregates
(
    key             String,
    source_topic    LowCardinality(String),
    channel         LowCardinality(String),
    unit            LowCardinality(String),
    window_kind     LowCardinality(String),
    window_start    DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    window_end      DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    count           UInt64,
    min             Float64 CODEC(Gorilla, ZSTD),
    max             Float64 CODEC(Gorilla, ZSTD),
    mean            Float64 CODEC(Gorilla, ZSTD),
    last            Float64 CODEC(Gorilla, ZSTD),
    p95             Float64 CODEC(Gorilla, ZSTD),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(window_start)
ORDER BY (key, channel, window_kind, window_start)
TTL toDateTime(window_start) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
