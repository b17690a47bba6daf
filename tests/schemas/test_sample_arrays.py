"""The vectorised samples reader and writer must agree exactly with fastavro, or step aside."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleetstream.schemas import codec, registry
from fleetstream.schemas.sample_arrays import decode_samples, encode_samples, sample_tail, writes_samples_of

LATEST = registry.latest("signal_batch")
SAMPLES_SCHEMA = fastavro.parse_schema(LATEST.raw["fields"][-1]["type"], named_schemas={})
TAIL = LATEST.sample_tail

RECORD = {"batch_id": "b1", "source": "test", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1",
          "device_id": "d1", "name": "EngineSpeed", "unit": "rpm"}


def fastavro_bytes(samples: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SAMPLES_SCHEMA, samples)
    return buf.getvalue()


def fastavro_samples(data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), SAMPLES_SCHEMA, None)


def same(decoded: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Equal, with NaN equal to NaN (compared by bytes, so -0.0 and 0.0 differ as they do on the wire)."""
    return [{**s, "value": struct.pack("<d", s["value"])} for s in decoded] == \
        [{**s, "value": struct.pack("<d", s["value"])} for s in expected]


stamps = st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(1_500_000_000_000, 2_000_000_000_000),
                   st.integers(-200, 200))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**53, 2**53))
sample = st.fixed_dictionaries({"timestamp_ms": stamps, "value": numbers},
                               optional={"flags": st.integers(-100, 100), "svalue": st.one_of(st.none(), st.text()),
                                         "time_text": st.one_of(st.none(), st.text())})
nullable = st.fixed_dictionaries({"timestamp_ms": stamps, "value": st.one_of(st.none(), numbers)},
                                 optional={"flags": st.integers(-100, 100), "svalue": st.one_of(st.none(), st.text()),
                                           "time_text": st.one_of(st.none(), st.text())})


@settings(max_examples=400, deadline=None)
@given(st.lists(sample, max_size=150))
def test_samples_are_fastavros_bytes_or_left_to_fastavro(samples):
    encoded = encode_samples(samples, TAIL)
    if encoded is not None:
        assert encoded == fastavro_bytes(samples)


@settings(max_examples=400, deadline=None)
@given(st.lists(nullable, max_size=150))
@example([{"timestamp_ms": 64, "value": 0.0}, {"timestamp_ms": 64, "value": 0.0},
          {"timestamp_ms": 16384, "value": 0.0}])  # a wider last timestamp: once misread when truncated
def test_arrays_are_read_as_fastavro_reads_them_or_left_to_fastavro(samples):
    data = fastavro_bytes(samples)
    decoded = decode_samples(data, 0, TAIL)
    if decoded is not None:
        assert same(decoded, fastavro_samples(data))
    assert decode_samples(data[:-1], 0, TAIL) is None  # truncated
    assert decode_samples(data + b"\x00", 0, TAIL) is None  # trailing bytes: not an array that ends the record


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1_500_000_000_000, 2_000_000_000_000), values=st.lists(st.floats(), min_size=1,
                                                                                 max_size=200))
def test_device_batches_take_the_fast_path(start, values):
    samples = [{"timestamp_ms": start + 10 * i, "value": v} for i, v in enumerate(values)]
    data = fastavro_bytes(samples)
    assert encode_samples(samples, TAIL) == data
    decoded = decode_samples(data, 0, TAIL)
    assert decoded is not None and same(decoded, fastavro_samples(data))


def test_rows_of_another_shape_with_the_same_total_length_are_declined():
    # A null value is 8 bytes shorter than a double, a 7-character svalue 8 bytes longer: the array has the
    # length of fixed-width rows, but its second and third rows are not fixed-width rows.
    t = 1_700_000_000_000
    samples: list[dict[str, Any]] = [{"timestamp_ms": t, "value": 1.0}, {"timestamp_ms": t + 1, "value": None},
               {"timestamp_ms": t + 2, "value": 2.0, "svalue": "seven.."}, {"timestamp_ms": t + 3, "value": 3.0}]
    data = fastavro_bytes(samples)
    assert len(data) == len(fastavro_bytes([{"timestamp_ms": t + i, "value": 1.0} for i in range(4)]))
    assert decode_samples(data, 0, TAIL) is None


def test_what_the_fast_path_cannot_write_is_declined():
    base = {"timestamp_ms": 1_700_000_000_000, "value": 1.0}
    assert encode_samples([], TAIL) is None
    assert encode_samples([{**base, "svalue": "idle"}], TAIL) is None
    assert encode_samples([{**base, "value": None}], TAIL) is None
    assert encode_samples([{**base, "value": True}], TAIL) is None
    assert encode_samples([{**base, "timestamp_ms": 1.5}], TAIL) is None
    assert encode_samples([{**base, "flags": 64}], TAIL) is None
    assert encode_samples([{"timestamp_ms": 1}], TAIL) is None
    assert encode_samples([{**base, "timestamp_ms": 63}, {**base, "timestamp_ms": 64}], TAIL) is None  # 1 vs 2 bytes


def test_only_the_signal_sample_layout_is_written_fast():
    assert LATEST.head is not None
    assert not any(v.head is not None for t in registry.record_types() if t != "signal_batch"
                   for v in registry.history(t))
    renamed = {**LATEST.raw, "fields": [*LATEST.raw["fields"][:-1], {**LATEST.raw["fields"][-1], "name": "other"}]}
    assert not writes_samples_of(renamed)


def test_a_whole_signal_batch_encodes_as_fastavro_writes_it():
    samples = [{"timestamp_ms": 1_700_000_000_000 + i, "value": i * 0.5, "flags": i % 3} for i in range(100)]
    record = {**RECORD, "samples": samples}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, LATEST.parsed, record)
    assert codec.encode("signal_batch", record) == b"\xc3\x01" + LATEST.fingerprint + buf.getvalue()
    decoded = codec.decode(codec.encode("signal_batch", record), "signal_batch")
    buf.seek(0)
    assert decoded == fastavro.schemaless_reader(buf, LATEST.parsed, None)
    assert decoded["samples"][7]["flags"] == 1


def test_the_latest_sample_has_a_time_text_tail_written_fast_when_null():
    assert TAIL == ("time_text",)
    assert sample_tail(registry.history("signal_batch")[1].raw) == ()  # v2: no tail
    samples = [{"timestamp_ms": 1_700_000_000_000 + i, "value": float(i)} for i in range(3)]
    data = fastavro_bytes(samples)
    assert encode_samples(samples, TAIL) == data
    assert encode_samples(samples) != data  # the tail byte is part of the row
    decoded = decode_samples(data, 0, TAIL)
    assert decoded is not None and decoded == fastavro_samples(data) and decoded[0]["time_text"] is None


def test_a_set_tail_field_is_left_to_fastavro_both_ways():
    samples: list[dict[str, Any]] = [
        {"timestamp_ms": 1_700_000_000_000, "value": 1.0, "time_text": "2023-11-14T22:13:20.000000+00:00"},
        {"timestamp_ms": 1_700_000_000_001, "value": 2.0}]
    assert encode_samples(samples, TAIL) is None
    assert decode_samples(fastavro_bytes(samples), 0, TAIL) is None


def test_a_tail_that_is_not_a_null_defaulted_union_is_not_the_layout():
    items = LATEST.raw["fields"][-1]["type"]["items"]
    required = {**items, "fields": [*items["fields"][:4], {"name": "time_text", "type": "string"}]}
    schema = {**LATEST.raw, "fields": [*LATEST.raw["fields"][:-1],
                                       {**LATEST.raw["fields"][-1], "type": {"type": "array", "items": required}}]}
    assert sample_tail(schema) is None and not writes_samples_of(schema)
