-- The vehicle client's signal descriptor (what the GraphQL backend keys messages by) and the DTC message's
-- identity, stored with the rows so nothing the device sent is kept only on a topic with 7 days' retention.
-- Dyno samples leave them empty. LowCardinality: a few hundred distinct descriptors per fleet.
ALTER TABLE fleetstream.samples
    ADD COLUMN IF NOT EXISTS signal_type  LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS param_type   LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS param_id     LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS message_name LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS network_name LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS ecu_name     LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS ecu_id       LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS arb_id       LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS file_id      LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS message_date LowCardinality(String) DEFAULT '';

ALTER TABLE fleetstream.dtcs
    ADD COLUMN IF NOT EXISTS name         LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS arb_id       LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS file_id      LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS message_date LowCardinality(String) DEFAULT '';
