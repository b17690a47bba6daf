"""With a Schema Registry configured, every part frames Avro the same way: the one serializer of the process.

The edge writes the Confluent wire format; the worker used to read only single-object framing and would have
dead-lettered every such message as malformed. Here one record goes edge → validation → analytics → ClickHouse
rows through each part's own objects, with confluent-kafka's in-memory registry (`mock://`, shared by the parts
because they share the process's serializer). What this does not prove: parts in separate processes against a
real registry server (none runs on this machine).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fleetstream.config import Settings, load_settings
from fleetstream.producers.edge import EdgeProducer
from fleetstream.schemas import codec
from fleetstream.schemas.codec import SINGLE_OBJECT_MARKER
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.consumer import ClickHouseSink
from fleetstream.streams.analytics import AnalyticsConfig, Analyzer
from fleetstream.streams.app import StreamStats, validate_message
from fleetstream.streams.validation import Validator
from fleetstream.topics import record_type_of


def registry_settings(tmp_path: Path) -> Settings:
    return load_settings(kafka={"schema_registry_url": "mock://fleetstream-registry-mode"}, home=tmp_path)


def message(value: bytes) -> Any:
    return SimpleNamespace(value=lambda: value, key=lambda: b"v1")


def test_every_part_uses_the_one_serializer_and_reads_registry_framing(tmp_path: Path) -> None:
    settings = registry_settings(tmp_path)
    serializer = codec.serializer(settings.kafka.schema_registry_url)
    edge = EdgeProducer(settings.kafka)
    sink = ClickHouseSink(settings, serve_queries=False)
    assert edge._codec is serializer and sink._codec is serializer

    now_ms = int(time.time() * 1000)
    samples = [{"timestamp_ms": now_ms - 60_000 + 100 * i, "value": 1000.0 + i, "svalue": None, "flags": 0}
               for i in range(100)]
    samples[7]["value"] = float("nan")
    record = {"batch_id": "reg-1", "source": "test", "org_id": "1", "fleet_id": "1", "vehicle_id": "v1",
              "device_id": "d1", "name": "EngineSpeed", "unit": "rpm", "samples": samples}
    raw = serializer.encode("signal_batch", record, "telemetry.signals")  # what the edge producer writes
    assert raw[:1] == b"\x00" and raw[:2] != SINGLE_OBJECT_MARKER

    stats = StreamStats()
    outputs = validate_message(Validator(settings.validation), "telemetry.signals", 0, 5, b"v1", raw, now_ms,
                               stats, serializer)
    by_topic = {topic: value for topic, _, value in outputs}
    assert set(by_topic) == {"telemetry.signals.valid", "dlq.telemetry.signals"}
    assert all(value[:1] == b"\x00" for value in by_topic.values())
    assert (stats.valid_samples, stats.dead_letter_samples) == (99, 1)
    letter = serializer.decode(by_topic["dlq.telemetry.signals"], "dead_letter")
    assert letter["error_code"] == "nan" and serializer.decode(letter["original"], "signal_batch")["samples"][0][
        "timestamp_ms"] == samples[7]["timestamp_ms"]

    valid = by_topic["telemetry.signals.valid"]
    analyzer = Analyzer(AnalyticsConfig.from_settings(settings.streams), serializer)
    batch = analyzer.decode("telemetry.signals.valid", valid)
    assert len(batch) == 99
    later = analyzer.process("telemetry.signals.valid", 0, 0, b"v1", batch, now_ms, time.time(), {}, {})
    assert all(value[:1] == b"\x00" and serializer.decode(value, record_type_of(topic))
               for topic, _, value in later)

    buffered = sink._buffered("telemetry.signals.valid", message(valid), 0)
    assert buffered.error is None and buffered.record is not None and buffered.rows == 99
    table = rows.samples_arrow("signal_batch", [rows.SourcedRecord(buffered.record, "telemetry.signals.valid", 0,
                                                                   0)])
    assert table.num_rows == 99 and 1007.0 not in table.column("value").to_pylist()
