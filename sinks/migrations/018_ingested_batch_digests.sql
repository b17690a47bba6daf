-- The content digest (BLAKE2b-128 of the message value, hex) of each stored batch id. A record whose batch id
-- is already stored is skipped as a re-sent copy only when its digest is the same; with other content it is
-- a `batch_id_conflict` dead letter (two sources or two runs reused an id). Rows written before this column
-- existed have '' and cannot be compared: a record matching one of them is skipped, as it was before.
ALTER TABLE fleetstream.ingested_batches ADD COLUMN IF NOT EXISTS digest String DEFAULT '';
