"""Every schema version stays readable by the next, and the next by it, and published versions never change."""

from __future__ import annotations

import io

import fastavro
import pytest
from fastavro.utils import generate_many

from fleetstream.schemas import registry

PAIRS = [
    (versions[i], versions[i + 1])
    for record_type in registry.record_types()
    for versions in [registry.history(record_type)]
    for i in range(len(versions) - 1)
]


def _roundtrip(writer: registry.SchemaVersion, reader: registry.SchemaVersion, count: int = 50) -> None:
    for record in generate_many(writer.parsed, count):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer.parsed, record)
        buf.seek(0)
        fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)


def test_there_is_a_schema_history_to_check():
    assert PAIRS, "no record type has two versions; the compatibility test would check nothing"


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=lambda v: f"{v.record_type}-v{v.version}")
def test_new_reader_reads_old_writer(old, new):
    _roundtrip(writer=old, reader=new)


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=lambda v: f"{v.record_type}-v{v.version}")
def test_old_reader_reads_new_writer(old, new):
    _roundtrip(writer=new, reader=old)


def test_published_versions_are_unchanged():
    lock = (registry.AVRO_DIR / "fingerprints.lock").read_text().splitlines()
    rows = [line.split() for line in lock if line and not line.startswith("#")]
    published = {(record_type, version): fp for record_type, version, fp in rows}
    current = {(v.record_type, f"v{v.version}"): v.fingerprint.hex()
               for t in registry.record_types() for v in registry.history(t)}
    changed = {k for k in published if current.get(k) != published[k]}
    assert not changed, f"published schema versions were edited in place (add a new version instead): {changed}"
    assert set(current) == set(published), "a new schema version is missing from schemas/avro/fingerprints.lock"


def test_every_design_record_type_has_a_schema():
    assert set(registry.record_types()) == {
        "signal_batch", "dtc_batch", "gps_batch", "network_stats", "dyno_sample_batch", "fleet_location_batch",
        "fleet_fault_batch", "window_aggregate", "kpi", "alert", "dead_letter",
        # the read side (fleetstream serve): acknowledgements, audit entries, users
        "alert_ack", "audit_entry", "user_account",
        # seed 004's side: tracked events, metric values, metric/segment definitions, report announcements
        "analytics_event", "metric_value", "analytics_definition", "report_generated",
    }
