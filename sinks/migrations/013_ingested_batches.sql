-- Batch identities already stored, per stream: stages upstream hand over at least once (a worker that
-- rebalances re-sends what it had not committed; a file re-import re-sends identical batches), and such a
-- re-sent record has a different offset, so the insert token cannot catch it. Its batch_id is the same,
-- so the sink skips records whose (stream, batch_id) is here. Inserted after the rows they stand for.
CREATE TABLE IF NOT EXISTS fleetstream.ingested_batches
(
    stream       LowCardinality(String),
    batch_id     String,
    topic        LowCardinality(String),
    partition    Int32,
    offset       Int64,
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (stream, batch_id)
TTL toDateTime(ingested_at) + INTERVAL ${retention_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
