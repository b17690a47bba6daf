-- The sink's in-flight batch per consumer group and partition: the offset range of the batch being (or last)
-- inserted and whether the insert was acknowledged. After a crash the sink re-forms exactly that range, so the
-- replayed insert carries the same deduplication token (the official ClickHouse Kafka connector's state machine).
-- EmbeddedRocksDB: a key-value table, one row per key, overwritten in place (no part per update).
CREATE TABLE IF NOT EXISTS fleetstream.sink_offsets
(
    key          String,
    group_id     String,
    topic        String,
    partition    Int32,
    min_offset   Int64,
    max_offset   Int64,
    state        Enum8('before' = 1, 'after' = 2),
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY key;
