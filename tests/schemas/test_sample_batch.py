"""A sample batch is the same record in columns: its bytes are the record's, both ways, in both framings."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.schemas import codec
from fleetstream.schemas.codec import Codec, SampleBatch

HEAD = {"batch_id": "b1", "source": "test", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1",
        "device_id": "d1", "name": "EngineSpeed", "unit": "rpm"}
DYNO = {"batch_id": "d1", "source": "jetdrive", "station_id": "s1", "provider": "p", "channel": "Power",
        "unit": "hp", "run_id": "r1", "sensor_state": ""}

stamps = st.one_of(st.integers(1_500_000_000_000, 2_000_000_000_000), st.integers(-2**63, 2**63 - 1))
signal_sample = st.fixed_dictionaries(
    {"timestamp_ms": stamps, "value": st.one_of(st.none(), st.floats(allow_nan=False))},
    optional={"flags": st.integers(0, 100), "svalue": st.one_of(st.none(), st.text(max_size=3)),
              "time_text": st.one_of(st.none(), st.text(max_size=3))})


def full(record: dict[str, Any]) -> dict[str, Any]:
    """A record as a decoder returns it: every sample with its defaults filled."""
    return codec.decode(codec.encode("signal_batch", record), "signal_batch")


@settings(max_examples=300, deadline=None)
@given(st.lists(signal_sample, max_size=120))
def test_a_signal_batch_encodes_to_the_records_bytes_and_decodes_back(samples):
    record = {**HEAD, "samples": samples}
    data = codec.encode("signal_batch", record)
    batch = Codec().decode_batch(data, "signal_batch")
    assert batch.to_record() == full(record)
    assert Codec().encode_batch(batch) == data
    assert Codec().encode_batch(SampleBatch.from_record("signal_batch", full(record))) == data


def test_numeric_signal_batches_are_read_into_columns_without_sample_dicts():
    ts = np.arange(1_700_000_000_000, 1_700_000_000_100, dtype=np.int64)
    batch = SampleBatch.from_columns("signal_batch", HEAD, ts, ts * 0.5, np.zeros(100, np.int64))
    data = Codec().encode_batch(batch)
    assert data == codec.encode("signal_batch", batch.to_record())
    decoded = Codec().decode_batch(data, "signal_batch")
    assert decoded.equals(batch.with_fields(**{k: decoded[k] for k in decoded.fields}))
    assert decoded["vehicle_id"] == "v1" and len(decoded) == 100 and decoded.timestamp_ms.tolist() == ts.tolist()
    assert decoded.svalue is None and not decoded.tail


def test_a_dyno_batch_round_trips_through_the_general_writer():
    record = {**DYNO, "samples": [{"timestamp_ms": 1_700_000_000_000 + i, "value": i * 1.5, "flags": i % 3}
                                  for i in range(50)]}
    data = codec.encode("dyno_sample_batch", record)
    batch = Codec().decode_batch(data, "dyno_sample_batch")
    assert batch.to_record() == codec.decode(data, "dyno_sample_batch")
    assert Codec().encode_batch(batch) == data


def test_take_selects_samples_without_touching_the_batch_it_came_from():
    record = full({**HEAD, "samples": [{"timestamp_ms": 1_700_000_000_000 + i, "value": float(i),
                                        "svalue": "x" if i == 3 else None} for i in range(6)]})
    batch = SampleBatch.from_record("signal_batch", record)
    part = batch.take(np.array([False, True, False, True, False, False]))
    assert part.to_record()["samples"] == [record["samples"][1], record["samples"][3]]
    assert batch.to_record() == record
    flagged = part.with_columns(flags=np.array([4, 0]))
    assert flagged.flags.tolist() == [4, 0] and part.flags.tolist() == [0, 0]


def test_a_batch_of_the_wrong_type_is_a_decode_error():
    data = codec.encode("signal_batch", {**HEAD, "samples": []})
    try:
        Codec().decode_batch(data, "dyno_sample_batch")
    except codec.DecodeError as exc:
        assert "expected a dyno_sample_batch" in str(exc)
    else:
        raise AssertionError("decoded a signal batch as a dyno batch")


def test_registry_framing_carries_the_same_batch():
    writer = Codec("mock://fleetstream-batch")
    ts = np.arange(1_700_000_000_000, 1_700_000_000_010, dtype=np.int64)
    batch = SampleBatch.from_columns("signal_batch", HEAD, ts, ts * 1.0)
    data = writer.encode_batch(batch, topic="telemetry.signals")
    assert data[:1] == b"\x00"
    assert data[5:] == codec.encode("signal_batch", batch.to_record())[10:]  # same body, other framing
    record = writer.decode(data, "signal_batch")
    assert record == full(batch.to_record())
    assert writer.decode_batch(data, "signal_batch").equals(SampleBatch.from_record("signal_batch", record))
