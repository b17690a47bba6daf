-- GPS fixes of the vehicle client, one row per fix.
-- available_mask: which fields the device marked valid (1 accuracy, 2 altitude, 4 bearing, 8 speed, 16 time).
CREATE TABLE IF NOT EXISTS fleetstream.gps_points
(
    org_id          LowCardinality(String),
    fleet_id        LowCardinality(String),
    vehicle_id      String,
    device_id       String,
    source          LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    latitude        Nullable(Float64) CODEC(Gorilla, ZSTD),
    longitude       Nullable(Float64) CODEC(Gorilla, ZSTD),
    accuracy_m      Nullable(Float64),
    altitude_m      Nullable(Float64),
    speed           Nullable(Float64),
    bearing_deg     Nullable(Float64),
    available_mask  UInt8,
    batch_id        String CODEC(ZSTD),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64 CODEC(Delta, ZSTD),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, vehicle_id, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
