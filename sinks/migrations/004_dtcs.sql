-- Diagnostic trouble codes, one row per code read.
CREATE TABLE IF NOT EXISTS fleetstream.dtcs
(
    org_id          LowCardinality(String),
    fleet_id        LowCardinality(String),
    vehicle_id      String,
    device_id       String,
    source          LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    dtc_id          LowCardinality(String),
    status          LowCardinality(String),
    description     String CODEC(ZSTD),
    message_name    LowCardinality(String),
    network_name    LowCardinality(String),
    ecu_name        LowCardinality(String),
    ecu_id          LowCardinality(String),
    extended        Array(String),
    snapshot        Array(String),
    batch_id        String CODEC(ZSTD),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64 CODEC(Delta, ZSTD),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, vehicle_id, dtc_id, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
