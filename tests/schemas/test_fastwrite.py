"""The vectorised sample writer must produce exactly fastavro's bytes, or step aside."""

from __future__ import annotations

import io
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec, registry
from schemas.fastwrite import encode_samples, writes_samples_of

LATEST = registry.latest("signal_batch")
SAMPLES_SCHEMA = fastavro.parse_schema(LATEST.raw["fields"][-1]["type"], named_schemas={})

RECORD = {"batch_id": "b1", "source": "test", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1",
          "device_id": "d1", "name": "EngineSpeed", "unit": "rpm"}


def fastavro_bytes(samples: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SAMPLES_SCHEMA, samples)
    return buf.getvalue()


stamps = st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(1_500_000_000_000, 2_000_000_000_000),
                   st.integers(-200, 200))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**53, 2**53))
sample = st.fixed_dictionaries({"timestamp_ms": stamps, "value": numbers},
                               optional={"flags": st.integers(0, 100), "svalue": st.one_of(st.none(), st.text())})


@settings(max_examples=400, deadline=None)
@given(st.lists(sample, max_size=150))
def test_samples_are_fastavros_bytes_or_left_to_fastavro(samples):
    encoded = encode_samples(samples)
    if encoded is not None:
        assert encoded == fastavro_bytes(samples)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1_500_000_000_000, 2_000_000_000_000), values=st.lists(st.floats(), min_size=1,
                                                                                 max_size=200))
def test_device_batches_take_the_fast_path(start, values):
    samples = [{"timestamp_ms": start + 10 * i, "value": v} for i, v in enumerate(values)]
    assert encode_samples(samples) == fastavro_bytes(samples)


def test_what_the_fast_path_cannot_write_is_declined():
    base = {"timestamp_ms": 1_700_000_000_000, "value": 1.0}
    assert encode_samples([]) is None
    assert encode_samples([{**base, "svalue": "idle"}]) is None
    assert encode_samples([{**base, "value": None}]) is None
    assert encode_samples([{**base, "value": True}]) is None
    assert encode_samples([{**base, "timestamp_ms": 1.5}]) is None
    assert encode_samples([{**base, "flags": 64}]) is None
    assert encode_samples([{"timestamp_ms": 1}]) is None
    assert encode_samples([{**base, "timestamp_ms": 63}, {**base, "timestamp_ms": 64}]) is None  # 1 vs 2 bytes


def test_only_the_signal_sample_layout_is_written_fast():
    assert LATEST.fast_samples
    assert not any(v.fast_samples for t in registry.record_types() if t != "signal_batch"
                   for v in registry.history(t))
    renamed = {**LATEST.raw, "fields": [*LATEST.raw["fields"][:-1], {**LATEST.raw["fields"][-1], "name": "other"}]}
    assert not writes_samples_of(renamed)


def test_a_whole_signal_batch_encodes_as_fastavro_writes_it():
    samples = [{"timestamp_ms": 1_700_000_000_000 + i, "value": i * 0.5, "flags": i % 3} for i in range(100)]
    record = {**RECORD, "samples": samples}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, LATEST.parsed, record)
    assert codec.encode("signal_batch", record) == b"\xc3\x01" + LATEST.fingerprint + buf.getvalue()
    assert codec.decode(codec.encode("signal_batch", record), "signal_batch")["samples"][7]["flags"] == 1
