-- Bus statistics per network and upload (match rate = matched_messages / total_messages).
CREATE TABLE IF NOT EXISTS fleetstream.network_stats
(
    org_id             LowCardinality(String),
    fleet_id           LowCardinality(String),
    vehicle_id         String,
    device_id          String,
    source             LowCardinality(String),
    ts                 DateTime64(3, 'UTC'),
    network            LowCardinality(String),
    upload_id          Nullable(Int64),
    file_id            String,
    total_messages     Int64,
    matched_messages   Int64,
    unmatched_messages Int64,
    error_messages     Int64,
    long_message_parts Int64,
    min_time           Nullable(DateTime64(3, 'UTC')),
    max_time           Nullable(DateTime64(3, 'UTC')),
    rate               Float64,
    batch_id           String,
    kafka_topic        LowCardinality(String),
    kafka_partition    UInt16,
    kafka_offset       UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, vehicle_id, network, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
