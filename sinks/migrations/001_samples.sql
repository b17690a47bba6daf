-- Valid signal and dyno samples, one row per sample: the pipeline's main table.
-- Ordered for "one vehicle's channel over time"; codecs suit time series (delta-of-delta times, Gorilla floats).
-- non_replicated_deduplication_window keeps the hashes of recent inserts so a replayed batch (same
-- insert_deduplication_token) stores nothing.
CREATE TABLE IF NOT EXISTS fleetstream.samples
(
    org_id          LowCardinality(String),
    fleet_id        LowCardinality(String),
    vehicle_id      String,
    device_id       String,
    source          LowCardinality(String),
    channel         LowCardinality(String),
    unit            LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    value           Nullable(Float64) CODEC(Gorilla, ZSTD),
    svalue          String CODEC(ZSTD),
    flags           UInt8,
    run_id          LowCardinality(String),
    provider        LowCardinality(String),
    sensor_state    LowCardinality(String),
    batch_id        String CODEC(ZSTD),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64 CODEC(Delta, ZSTD),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, vehicle_id, channel, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
