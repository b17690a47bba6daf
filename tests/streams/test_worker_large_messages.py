"""Inputs near Kafka's 1 MB default limit: their outputs are sized to fit, and the partition goes on behind them.

A valid batch of 55,300 samples (995,5xx bytes, which the broker accepts) is re-encoded by validation to about the
same size, at faust's 1,000,000-byte producer limit (key and overhead included): it must reach `.valid` whole,
split into parts. 999,900
random bytes become a dead letter, which with its envelope would be larger still: it must be one that fits. A
small batch sent behind both on the same partition must be validated too (the worker crashed on the random bytes
forever, blocking the partition).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from fleetstream.demo import Services
from fleetstream.schemas import codec
from fleetstream.streams.outputs import OUTPUT_LIMIT_BYTES
from tests.streams.test_worker_correctness import Outputs, wait_for_worker, worker_env, worker_settings


def _batch(vehicle: str, samples: int, start_ms: int) -> dict[str, Any]:
    return {"batch_id": uuid.uuid4().hex, "source": "test", "org_id": "1", "fleet_id": "7", "vehicle_id": vehicle,
            "device_id": f"dev-{vehicle}", "name": "engine_speed", "unit": "rpm",
            "samples": [{"timestamp_ms": start_ms + i, "value": 3000.0 + (i % 997) / 8, "svalue": None, "flags": 0}
                        for i in range(samples)]}


@pytest.mark.integration
@pytest.mark.slow
def test_near_1mb_inputs_are_split_or_dead_lettered_and_the_partition_goes_on(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    worker_env(monkeypatch, f"fleetstream-streams-large-{run}")
    settings = worker_settings(kafka_bootstrap, tmp_path / "home")
    vehicle = f"large-{run}"
    start_ms = int(time.time() * 1000) - 3_600_000
    big = _batch(vehicle, 55_300, start_ms)  # ~995 kB in signal_batch v3 (a null time text per sample)
    big_value = codec.encode("signal_batch", big)
    garbage = os.urandom(999_900)
    small = _batch(vehicle, 50, start_ms + 100_000)
    assert OUTPUT_LIMIT_BYTES < len(big_value) < 1_000_000, len(big_value)

    outputs = Outputs(settings, {vehicle}, extra_topics=("telemetry.signals.valid",))
    worker = Services(settings)
    try:
        producer = Producer(settings.kafka.client(**{"message.max.bytes": 1_048_000, "enable.idempotence": True}))
        for value in (big_value, garbage, codec.encode("signal_batch", small)):
            producer.produce("telemetry.signals", key=vehicle.encode(), value=value)
        assert producer.flush(30) == 0
        worker.start("worker", "worker")
        wait_for_worker(settings, worker)

        def done(out: Outputs) -> bool:
            ids = {r["batch_id"] for r in out.records["telemetry.signals.valid"]}
            return small["batch_id"] in ids and bool(out.records["dlq.telemetry.signals"])

        outputs.settle(worker, done, timeout_s=120)
    finally:
        outputs.close()
        worker.stop(timeout_s=15)

    valid = outputs.records["telemetry.signals.valid"]
    parts = [r for r in valid if r["batch_id"].startswith(f"{big['batch_id']}/")]
    assert len(parts) >= 2 and {r["batch_id"] for r in parts} == {f"{big['batch_id']}/{i + 1}-of-{len(parts)}"
                                                                   for i in range(len(parts))}
    timestamps = [s["timestamp_ms"] for part in sorted(parts, key=lambda r: int(r["batch_id"].split("/")[1]
                                                                                 .split("-")[0]))
                  for s in part["samples"]]
    assert timestamps == [s["timestamp_ms"] for s in big["samples"]]  # all 55,300, in order, once
    assert [r["batch_id"] for r in valid if r["batch_id"] == small["batch_id"]] == [small["batch_id"]]
    [letter] = outputs.records["dlq.telemetry.signals"]
    assert letter["error_code"] == "malformed" and letter["original"] == b"" and letter["sample_count"] == 1
    assert f"original of {len(garbage)} bytes not carried" in letter["reason"]
    assert f"telemetry.signals[{letter['partition']}]@{letter['offset']}" in letter["reason"]
