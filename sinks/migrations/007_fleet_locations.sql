-- Vehicle locations from the fleet APIs (Motive, Samsara), one row per location.
CREATE TABLE IF NOT EXISTS fleetstream.fleet_locations
(
    provider             LowCardinality(String),
    provider_vehicle_id  String,
    vin                  Nullable(String),
    fleet_number         Nullable(String),
    ts                   DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    latitude             Float64 CODEC(Gorilla, ZSTD),
    longitude            Float64 CODEC(Gorilla, ZSTD),
    speed_mph            Nullable(Float64),
    heading_degrees      Nullable(Float64),
    engine_state         LowCardinality(Nullable(String)),
    driver_id            Nullable(String),
    driver_name          Nullable(String),
    location_description Nullable(String) CODEC(ZSTD),
    odometer_miles       Nullable(Float64),
    batch_id             String,
    kafka_topic          LowCardinality(String),
    kafka_partition      UInt16,
    kafka_offset         UInt64,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (provider, provider_vehicle_id, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
