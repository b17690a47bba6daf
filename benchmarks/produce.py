"""`fleetstream bench produce`: samples/s of the edge producer path, next to raw confluent-kafka and the broker's tool.

Three ways to put the same traffic on a fresh topic, each repeated (median, min and max reported):

* `edge`: what a device does: `EdgeProducer.publish` of signal_batch records (100 samples per message), i.e.
  Avro single-object encode + sample counting + idempotent `acks=all` lz4 produce with delivery reports, then
  `flush`. The clock runs from the first publish to the last acknowledgement.
* `raw`: a bare `confluent_kafka.Producer` with the same configuration producing the *same encoded bytes*
  (encoded before the clock starts), no delivery callback. `produce_vs_raw_ratio` = edge / raw: our overhead.
* `perf_test`: the broker's own `org.apache.kafka.tools.ProducerPerformance` from the cached jars, with the
  same record count, our mean message size and the same producer properties: the machine's limit for
  messages of this size. Its payload is random letters (not Avro), so lz4 compresses it differently.

Samples/s counts samples (100 per message); MB/s counts encoded message values (before compression).
"""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from fleetstream.benchmarks.common import (
    CHANNELS,
    SAMPLES_PER_MESSAGE,
    Stat,
    machine_info,
    machine_line,
    render_table,
    repeat,
    signal_batch,
)
from fleetstream.config import KafkaSettings, Settings
from fleetstream.producers.edge import EdgeProducer
from fleetstream.schemas import codec

__all__ = ["bench_produce", "producer_config", "to_table"]

_TOPIC = "telemetry.signals"  # EdgeProducer picks the record type by topic name; the broker topic is fresh per run
_PERF_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                        r"([\d.]+) ms max latency")


def producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The edge producer's librdkafka configuration, so the raw client is measured on the same settings."""
    return EdgeProducer(kafka).config


def _records(messages: int, seed: int = 7) -> list[dict[str, Any]]:
    """Distinct signal batches: 50 vehicles x 7 channels, 100 samples at 100 Hz each, as devices send them."""
    rng = random.Random(seed)
    start_ms = int(time.time() * 1000) - 3_600_000
    return [signal_batch(i % 50, (i // 50) % len(CHANNELS), start_ms + (i // 350) * 1000, SAMPLES_PER_MESSAGE,
                         10, rng, seq=i) for i in range(messages)]


def _fresh_topic(bootstrap: str, label: str) -> str:
    from fleetstream.admin import ensure_topics

    name = f"bench.produce.{label}.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [name], partitions=3)
    return name


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    if names:
        for future in AdminClient({"bootstrap.servers": bootstrap}).delete_topics(names).values():
            with contextlib.suppress(Exception):  # cleanup only
                future.result()


def _edge_run(settings: Settings, records: list[dict[str, Any]], topic: str) -> tuple[float, int]:
    from fleetstream.producers.edge import EdgeProducer

    edge = EdgeProducer(settings.kafka)
    real = edge.producer
    # EdgeProducer picks the schema by topic name; route its produce calls to this run's fresh topic.
    edge._producer = _Redirect(real, topic)  # type: ignore[assignment]
    started = time.perf_counter()
    for record in records:
        edge.publish(_TOPIC, record["vehicle_id"], record)
    remaining = edge.flush(60.0)
    elapsed = time.perf_counter() - started
    if remaining or edge.failed_messages or edge.delivered_messages != len(records):
        raise RuntimeError(f"edge run: {edge.delivered_messages}/{len(records)} delivered, "
                           f"{edge.failed_messages} failed, {remaining} in flight ({edge.last_error})")
    return elapsed, sum(edge.delivered_samples.values())


class _Redirect:
    """A Producer stand-in that sends everything to one topic (all other calls pass through)."""

    def __init__(self, producer: Producer, topic: str):
        self._producer = producer
        self._topic = topic
        self.poll = producer.poll  # bound directly: no extra Python frame on the per-message poll
        self.flush = producer.flush

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self._producer.produce(self._topic, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def _raw_run(settings: Settings, encoded: list[tuple[bytes, bytes]], topic: str) -> float:
    producer = Producer(producer_config(settings.kafka))
    errors: list[Any] = []

    def on_error(err: Any) -> None:
        errors.append(err)

    started = time.perf_counter()
    for key, value in encoded:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60.0)
    elapsed = time.perf_counter() - started
    if remaining:
        raise RuntimeError(f"raw run: {remaining} messages not acknowledged")
    return elapsed


def _perf_test(settings: Settings, bootstrap: str, topic: str, records: int, record_size: int) -> dict[str, float]:
    from fleetstream.stack import ensure_java, resolve_jars

    libs: Path = resolve_jars(settings.stack.cache_dir, settings.stack.kafka_version)
    kafka = settings.kafka
    command = [ensure_java(), "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
               "--topic", topic, "--num-records", str(records), "--record-size", str(record_size),
               "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
               "enable.idempotence=true", f"compression.type={kafka.compression_type}",
               f"linger.ms={kafka.linger_ms}", f"batch.size={kafka.batch_size_bytes}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    matches = [_PERF_LINE.search(line) for line in out.stdout.splitlines()]
    final = [m for m in matches if m]
    if out.returncode != 0 or not final:
        raise RuntimeError(f"ProducerPerformance failed ({out.returncode}): {out.stderr[-2000:] or out.stdout[-2000:]}")
    last = final[-1]  # the summary line comes last; earlier ones are 5-second progress reports
    return {"records_per_s": float(last.group(2)), "mb_per_s": float(last.group(3)),
            "avg_latency_ms": float(last.group(4)), "max_latency_ms": float(last.group(5))}


def bench_produce(bootstrap: str, samples: int = 2_000_000, batch: int = SAMPLES_PER_MESSAGE, repeats: int = 3,
                  settings: Settings | None = None) -> dict[str, Any]:
    """Measure the three paths (see the module docstring) on fresh topics of the broker at `bootstrap`."""
    if batch != SAMPLES_PER_MESSAGE:
        raise ValueError(f"the workload is signal batches of {SAMPLES_PER_MESSAGE} samples")
    base = settings or Settings()
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
    messages = max(1, samples // batch)
    records = _records(messages)
    encoded = [(r["vehicle_id"].encode(), codec.encode("signal_batch", r)) for r in records]
    payload_bytes = sum(len(v) for _, v in encoded)
    mean_size = round(payload_bytes / messages)
    total_samples = messages * batch
    topics: list[str] = []

    def measure(index: int) -> dict[str, float]:
        label = "warmup" if index < 0 else str(index)
        topic = _fresh_topic(bootstrap, f"edge-{label}")
        topics.append(topic)
        edge_s, delivered = _edge_run(settings, records, topic)
        if delivered != total_samples:
            raise RuntimeError(f"edge run delivered {delivered} of {total_samples} samples")
        topic = _fresh_topic(bootstrap, f"raw-{label}")
        topics.append(topic)
        raw_s = _raw_run(settings, encoded, topic)
        topic = _fresh_topic(bootstrap, f"perf-{label}")
        topics.append(topic)
        perf = _perf_test(settings, bootstrap, topic, messages, mean_size)
        _delete_topics(bootstrap, topics)
        topics.clear()
        return {
            "edge_samples_per_s": total_samples / edge_s, "edge_mb_per_s": payload_bytes / edge_s / 1e6,
            "raw_samples_per_s": total_samples / raw_s, "raw_mb_per_s": payload_bytes / raw_s / 1e6,
            "perf_test_samples_per_s": perf["records_per_s"] * batch,
            "perf_test_mb_per_s": perf["records_per_s"] * mean_size / 1e6,
            "perf_test_avg_latency_ms": perf["avg_latency_ms"],
            "ratio": raw_s and edge_s and (raw_s / edge_s),
        }

    figures = repeat(measure, repeats, warmup=1)
    return {
        "machine": machine_info(settings.stack.kafka_version),
        "workload": {"samples": total_samples, "messages": messages, "samples_per_message": batch,
                     "mean_message_bytes": mean_size, "topic_partitions": 3,
                     "producer": {k: v for k, v in producer_config(settings.kafka).items()
                                  if k not in ("bootstrap.servers", "logger")},
                     "repeats": repeats, "warmup_runs": 1},
        "figures": figures,
        "produce_vs_raw_ratio": figures["ratio"].median,
        "produce_samples_per_s": figures["edge_samples_per_s"].median,
        "produce_mb_per_s": figures["edge_mb_per_s"].median,
        "raw_samples_per_s": figures["raw_samples_per_s"].median,
        "perf_test_samples_per_s": figures["perf_test_samples_per_s"].median,
    }


def to_table(report: dict[str, Any]) -> str:
    f: dict[str, Stat] = report["figures"]
    w = report["workload"]
    rows = [
        ["edge (EdgeProducer.publish)", f["edge_samples_per_s"], f["edge_mb_per_s"].cell(",.1f")],
        ["raw confluent-kafka, same bytes", f["raw_samples_per_s"], f["raw_mb_per_s"].cell(",.1f")],
        ["kafka ProducerPerformance", f["perf_test_samples_per_s"], f["perf_test_mb_per_s"].cell(",.1f")],
    ]
    notes = [f"edge / raw = {f['ratio'].cell(',.2f')} (median, min-max; target >= 0.5)",
             f"{w['samples']:,} samples in {w['messages']:,} messages of {w['samples_per_message']} samples, "
             f"mean {w['mean_message_bytes']:,} B; acks=all, idempotent, lz4; {w['repeats']} runs + 1 warm-up",
             machine_line(report["machine"])]
    return render_table("bench produce: samples/s (median (min-max))", ["path", "samples/s", "MB/s"], rows, notes)


def main() -> None:
    """`python -m fleetstream.benchmarks.produce [--json] [--samples N] [--bootstrap HOST:PORT]` (private broker if
    none)."""
    import argparse

    from fleetstream.benchmarks.common import private_kafka, render_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", help="an existing broker (default: a private one on free ports)")
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.bootstrap:
        report = bench_produce(args.bootstrap, args.samples, repeats=args.repeats)
    else:
        with private_kafka() as bootstrap:
            report = bench_produce(bootstrap, args.samples, repeats=args.repeats)
    print(render_json(report) if args.json else to_table(report))


if __name__ == "__main__":
    main()
