-- Seed 004's side of the read API (written by fleetstream serve through Kafka, stored by this sink):
-- tracked events, custom metric values, and the tenants' metric and segment definitions.

-- analytics.events. A client that retries an event with the same event_id and timestamp gets one row:
-- readers use FINAL (the sink's deduplication token covers replayed Kafka batches, not client retries).
CREATE TABLE IF NOT EXISTS fleetstream.analytics_events
(
    org_id          LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    event_type      LowCardinality(String),
    event_name      String,
    event_id        String,
    user_id         String,
    session_id      String,
    vehicle_id      String,
    source          LowCardinality(String),
    properties      String CODEC(ZSTD),
    context         String CODEC(ZSTD),
    received_at     DateTime64(3, 'UTC'),
    tracked_by      String,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, event_type, ts, event_id)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- analytics.metric.values: one row per recorded value of a defined metric.
CREATE TABLE IF NOT EXISTS fleetstream.metric_values
(
    org_id          LowCardinality(String),
    metric          LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD),
    value_id        String,
    metric_type     LowCardinality(String),
    value           Float64 CODEC(Gorilla, ZSTD),
    unit            LowCardinality(String),
    dimensions      Map(String, String),
    recorded_by     String,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (org_id, metric, ts)
TTL toDateTime(ts) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- analytics.definitions: the latest version of each (org, kind, name) wins; readers use FINAL.
CREATE TABLE IF NOT EXISTS fleetstream.analytics_definitions
(
    org_id          LowCardinality(String),
    kind            LowCardinality(String),
    name            String,
    body            String,
    deleted         UInt8,
    updated_at      DateTime64(3, 'UTC'),
    updated_by      String,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (org_id, kind, name)
SETTINGS non_replicated_deduplication_window = 10000;
