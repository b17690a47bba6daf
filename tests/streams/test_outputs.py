"""Outputs sized to fit the producer's limit (streams.outputs.fit), without a broker; the broker proof is
test_worker_large_messages."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fleetstream.schemas import codec
from fleetstream.schemas.deadletter import dead_letter
from fleetstream.streams.outputs import OUTPUT_LIMIT_BYTES, Output, fit, split_batch


def _batch(samples: int) -> dict[str, Any]:
    return {"batch_id": "b1", "source": "t", "org_id": "1", "fleet_id": "7", "vehicle_id": "v", "device_id": "d",
            "name": "engine_speed", "unit": "rpm",
            "samples": [{"timestamp_ms": 1_700_000_000_000 + i, "value": float(i), "svalue": None, "flags": 0}
                        for i in range(samples)]}


def test_small_outputs_pass_unchanged() -> None:
    outputs: list[Output] = [("telemetry.signals.valid", b"v", codec.encode("signal_batch", _batch(10)))]
    assert fit(outputs) is outputs


def test_a_large_batch_is_split_into_parts_that_fit_and_keep_every_sample_in_order() -> None:
    value = codec.encode("signal_batch", _batch(60_000))
    assert len(value) > OUTPUT_LIMIT_BYTES
    parts = fit([("telemetry.signals.valid", b"v", value)])
    decoded = [codec.decode(part, "signal_batch") for _, _, part in parts]
    assert all(topic == "telemetry.signals.valid" and key == b"v" and len(part) <= OUTPUT_LIMIT_BYTES
               for topic, key, part in parts)
    assert [d["batch_id"] for d in decoded] == [f"b1/{i + 1}-of-{len(parts)}" for i in range(len(parts))]
    assert [s["timestamp_ms"] for d in decoded for s in d["samples"]] == [s["timestamp_ms"]
                                                                           for s in _batch(60_000)["samples"]]
    assert split_batch("signal_batch", value, OUTPUT_LIMIT_BYTES) == [part for _, _, part in parts]  # replays alike


def test_a_large_dead_letter_keeps_its_envelope_without_the_original() -> None:
    original = os.urandom(999_900)
    letter = dead_letter(source_topic="telemetry.signals", partition=2, offset=41, key=b"v", original=original,
                         stage="decode", error_code="malformed", reason="not Avro", sample_count=1, now_ms=5)
    [(topic, key, value)] = fit([letter])
    envelope = codec.decode(value, "dead_letter")
    assert topic == "dlq.telemetry.signals" and key == b"v" and len(value) <= OUTPUT_LIMIT_BYTES
    assert envelope["original"] == b"" and envelope["error_code"] == "malformed" and envelope["sample_count"] == 1
    assert envelope["reason"].startswith("not Avro [original of 999900 bytes not carried")
    assert "telemetry.signals[2]@41" in envelope["reason"]


def test_a_record_without_samples_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        split_batch("kpi", b"x" * 2_000, 1_000)
