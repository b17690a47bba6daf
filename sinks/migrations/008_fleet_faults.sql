-- Engine fault codes from the fleet APIs, one row per fault observation.
CREATE TABLE IF NOT EXISTS fleetstream.fleet_faults
(
    provider            LowCardinality(String),
    provider_vehicle_id String,
    vin                 Nullable(String),
    fleet_number        Nullable(String),
    fault_id            String,
    code                LowCardinality(String),
    description         Nullable(String),
    status              LowCardinality(String),
    first_observed      DateTime64(3, 'UTC'),
    last_observed       Nullable(DateTime64(3, 'UTC')),
    source_address      Nullable(String),
    batch_id            String,
    kafka_topic         LowCardinality(String),
    kafka_partition     UInt16,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(first_observed)
ORDER BY (provider, provider_vehicle_id, code, first_observed)
TTL toDateTime(first_observed) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
