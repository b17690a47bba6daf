"""`fleetstream bench streams`: how fast the real worker process validates and analyses, and how late its output is.

Two measurements against a real broker and a real `fleetstream worker` child process (its own app id, so its
own consumer group and changelogs; the group's offsets are set to the current ends of the input topics
first, so the worker sees only the benchmark's records):

- throughput: `samples` signal samples, 100 per message as the producers batch them, are loaded into
  `telemetry.signals` before the worker starts; the clock runs from the worker's first `.valid` output to
  the moment its committed offsets on every input topic (raw and `.valid`) reach the end, i.e. everything
  went through validate, dedup, windows, alerts and KPIs, and the window output has stopped growing.
  Committed offsets move once per commit interval (1 s), so the figure is a lower bound within ~1 s.
- latency: with the worker caught up, messages are produced at `rate` samples/s for `duration_s`, each
  sample's event time being its produce time; a consumer of `telemetry.signals.valid` and
  `telemetry.windows` notes when each record arrives. `.valid` latency = arrival - produce time of the
  message; window latency = arrival - the earliest moment the window could be final (its end plus the
  allowed lateness, in event time = wall time here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fleetstream.admin import wait_for_group
from fleetstream.config import KafkaSettings, Settings, load_settings
from fleetstream.schemas import codec

__all__ = ["SAMPLES_PER_MESSAGE", "bench_streams", "to_table"]

SAMPLES_PER_MESSAGE = 100
VEHICLES = 20
BENCH_STREAMS = {"TUMBLING_MS": "1000", "HOPPING_SIZE_MS": "5000", "HOPPING_ADVANCE_MS": "1000",
                 "ALLOWED_LATENESS_MS": "500", "IDLE_FLUSH_S": "3600", "ALERT_RULES": "[]"}
"""Window settings of the benchmark worker: short windows, so the latency run sees hundreds of them."""


def _signal(run: str, vehicle: int, timestamps_ms: list[int], values: list[float]) -> dict[str, Any]:
    key = f"bench-{run}-{vehicle}"  # `run` differs between the two phases: their windows never mix
    return {"batch_id": uuid.uuid4().hex, "source": "bench", "org_id": "1", "fleet_id": "1", "vehicle_id": key,
            "device_id": key, "name": "engine_speed", "unit": "rpm",
            "samples": [{"timestamp_ms": t, "value": v, "svalue": None, "flags": 0}
                        for t, v in zip(timestamps_ms, values, strict=True)]}


@contextlib.contextmanager
def _worker(settings: Settings, app_id: str) -> Iterator[Any]:
    """A `fleetstream worker` child process with the bench's app id and windows (demo.Services runs it)."""
    from fleetstream.demo import Services

    env = {f"FLEETSTREAM_STREAMS__{k}": v for k, v in {**BENCH_STREAMS, "APP_ID": app_id}.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # Services.start hands the child this process's environment
    services = Services(settings)
    try:
        services.start("worker", "worker")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield services
    finally:
        services.stop(timeout_s=20)


def _input_topics(settings: Settings) -> list[str]:
    raw = settings.topics.raw
    return raw + [f"{t}.valid" for t in raw if t != "fleet.faults"]


def _ends(consumer: Consumer, topics: list[str]) -> dict[TopicPartition, int]:
    metadata = consumer.list_topics(timeout=10)
    ends = {}
    for topic in topics:
        for partition in metadata.topics[topic].partitions:
            for attempt in range(100):  # a topic created a moment ago may not have a leader yet
                try:
                    ends[TopicPartition(topic, partition)] = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=10)[1]
                    break
                except KafkaException:
                    if attempt == 99:
                        raise
                    time.sleep(0.2)
    return ends


def _seed_group(admin: AdminClient, group: str, ends: dict[TopicPartition, int]) -> None:
    """Commit the group's offsets at the current ends: the new worker starts with the benchmark's records."""
    offsets = [TopicPartition(tp.topic, tp.partition, offset) for tp, offset in ends.items()]
    for future in admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)]).values():
        future.result(timeout=30)


def _lag(admin: AdminClient, consumer: Consumer, group: str, topics: list[str]) -> int:
    ends = _ends(consumer, topics)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(tp.topic, tp.partition) for tp in ends])
    committed = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    position = {(tp.topic, tp.partition): tp.offset for tp in committed.topic_partitions}
    return sum(max(0, end - max(0, position.get((tp.topic, tp.partition), 0))) for tp, end in ends.items())


def _preload(settings: Settings, run: str, samples: int, start_ms: int) -> int:
    producer = Producer(settings.kafka.producer(**{"linger.ms": 20, "compression.type": "lz4",
                                                 "enable.idempotence": True}))
    rng = np.random.default_rng(7)
    messages = samples // SAMPLES_PER_MESSAGE
    for index in range(messages):
        vehicle, step = index % VEHICLES, index // VEHICLES
        first = start_ms + step * SAMPLES_PER_MESSAGE * 10  # 100 Hz per vehicle
        times = list(range(first, first + SAMPLES_PER_MESSAGE * 10, 10))
        record = _signal(run, vehicle, times, rng.uniform(800, 7_000, SAMPLES_PER_MESSAGE).round(1).tolist())
        producer.produce("telemetry.signals", key=record["vehicle_id"].encode(),
                         value=codec.encode("signal_batch", record))
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the broker did not acknowledge the preloaded records")
    return messages * SAMPLES_PER_MESSAGE


class _Watcher:
    """Consumes `.valid` and windows of this run's keys from given offsets, noting arrival wall times."""

    def __init__(self, settings: Settings, run: str, starts: dict[TopicPartition, int]):
        self.prefix = f"bench-{run}".encode()
        self.consumer = Consumer(settings.kafka.client(**{"group.id": f"bench-watch-{run}",
                                                          "enable.auto.commit": False, "fetch.wait.max.ms": 5}))
        self.consumer.assign([TopicPartition(tp.topic, tp.partition, offset) for tp, offset in starts.items()
                              if tp.topic in ("telemetry.signals.valid", "telemetry.windows")])
        self.valid: list[tuple[float, bytes, bytes]] = []  # (arrival wall time, key, value)
        self.windows: list[tuple[float, bytes, bytes]] = []
        self.first_valid_broker_ms: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for message in self.consumer.consume(2000, timeout=0.05):
                now = time.time()
                key, value = message.key(), message.value()
                if message.error() or key is None or value is None or not key.startswith(self.prefix):
                    continue
                if message.topic() == "telemetry.windows":
                    self.windows.append((now, key, value))
                else:
                    self.valid.append((now, key, value))
                    if self.first_valid_broker_ms is None:
                        self.first_valid_broker_ms = message.timestamp()[1]

    def __enter__(self) -> _Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"count": 0}
    array = np.asarray(values_ms)
    return {"count": int(array.size), "p50_ms": round(float(np.percentile(array, 50)), 1),
            "p95_ms": round(float(np.percentile(array, 95)), 1), "p99_ms": round(float(np.percentile(array, 99)), 1),
            "max_ms": round(float(array.max()), 1)}


def _offered_load(settings: Settings, run: str, rate: float, duration_s: float) -> int:
    """Produce at `rate` samples/s: every 1/(rate/100) s one message of 100 samples ending at its produce time."""
    producer = Producer(settings.kafka.producer(**{"linger.ms": 1, "compression.type": "lz4"}))
    interval = SAMPLES_PER_MESSAGE / rate
    start = time.monotonic()
    sent = 0
    while (due := start + sent * interval) < start + duration_s:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now_ms = int(time.time() * 1000)
        # 1 ms apart, ending now: per vehicle, messages are VEHICLES * interval apart (>= 100 ms at 20k/s).
        times = list(range(now_ms - SAMPLES_PER_MESSAGE + 1, now_ms + 1))
        record = _signal(run, sent % VEHICLES, times, [3_000.0 + (sent % 50)] * SAMPLES_PER_MESSAGE)
        producer.produce("telemetry.signals", key=record["vehicle_id"].encode(),
                         value=codec.encode("signal_batch", record))
        producer.poll(0)
        sent += 1
    producer.flush(30)
    return sent * SAMPLES_PER_MESSAGE


def bench_streams(bootstrap: str | None = None, samples: int = 2_000_000, rate: float = 20_000.0,
                  duration_s: float = 30.0, settings: Settings | None = None,
                  timeout_s: float = 600.0) -> dict[str, Any]:
    """Throughput of the worker on a preloaded backlog, then latency at a fixed offered rate (see module doc)."""
    from fleetstream.admin import create_topics

    base = settings or load_settings()
    if bootstrap:
        base = base.model_copy(update={"kafka": KafkaSettings(**{**base.kafka.model_dump(),
                                                                 "bootstrap_servers": bootstrap})})
    home = Path(tempfile.mkdtemp(prefix="fleetstream-bench-"))
    settings = base.model_copy(update={"home": home})
    run = uuid.uuid4().hex[:8]
    app_id = f"fleetstream-bench-{run}"
    create_topics(settings.kafka, settings.topics)
    admin = AdminClient(settings.kafka.client())
    probe = Consumer(settings.kafka.client(**{"group.id": f"bench-probe-{run}"}))
    inputs = _input_topics(settings)
    try:
        starts = _ends(probe, [*inputs, "telemetry.windows"])
        _seed_group(admin, app_id, {tp: o for tp, o in starts.items() if tp.topic in inputs})
        loaded = _preload(settings, run, samples, int(time.time() * 1000) - 20 * 60_000)
        with _Watcher(settings, run, starts) as watcher, _worker(settings, app_id) as worker:
            deadline = time.monotonic() + timeout_s
            while _lag(admin, probe, app_id, inputs) > 0 or len(watcher.valid) < loaded // SAMPLES_PER_MESSAGE:
                worker.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker did not catch up within {timeout_s:.0f} s")
                time.sleep(0.1)
            done = time.time()
            windows_at_done = len(watcher.windows)
            time.sleep(1.0)
            assert watcher.first_valid_broker_ms is not None
            elapsed = done - watcher.first_valid_broker_ms / 1000
            throughput = {"samples": loaded, "messages": loaded // SAMPLES_PER_MESSAGE, "seconds": round(elapsed, 2),
                          "samples_per_s": round(loaded / elapsed), "windows": windows_at_done,
                          "windows_stable": len(watcher.windows) == windows_at_done}
            wait_for_group(settings.kafka, app_id, check=worker.check)
            live = f"bench-{run}L-".encode()
            offered = _offered_load(settings, f"{run}L", rate, duration_s)
            time.sleep(3.0)  # the tail of the run: last windows close once 0.5 s of event time follows them
            valid_ms = []
            for arrived, _key, value in [v for v in watcher.valid if v[1].startswith(live)]:
                last = codec.decode(value, "signal_batch")["samples"][-1]["timestamp_ms"]
                valid_ms.append(arrived * 1000 - last)
            window_ms = []
            lateness = int(BENCH_STREAMS["ALLOWED_LATENESS_MS"])
            for arrived, _key, value in [w for w in watcher.windows if w[1].startswith(live)]:
                window = codec.decode(value, "window_aggregate")
                window_ms.append(arrived * 1000 - (window["window_end_ms"] + lateness))
            latency = {"offered_samples_per_s": rate, "duration_s": duration_s, "samples": offered,
                       "valid": _percentiles(valid_ms), "windows": _percentiles(window_ms)}
    finally:
        probe.close()
        shutil.rmtree(home, ignore_errors=True)
    return {"bootstrap": settings.kafka.bootstrap_servers, "app_id": app_id, "windows_config": BENCH_STREAMS,
            "throughput": throughput, "latency": latency}


def to_table(report: dict[str, Any]) -> str:
    t, lat = report["throughput"], report["latency"]

    def row(name: str, p: dict[str, Any]) -> str:
        if not p.get("count"):
            return f"  {name:<22} no records"
        return (f"  {name:<22} {p['count']:>8,}  p50 {p['p50_ms']:>8.1f}  p95 {p['p95_ms']:>8.1f}  "
                f"p99 {p['p99_ms']:>8.1f}  max {p['max_ms']:>8.1f} ms")

    return "\n".join([
        f"streams worker benchmark ({report['bootstrap']})",
        f"  throughput             {t['samples']:,} samples in {t['messages']:,} messages: {t['seconds']} s, "
        f"{t['samples_per_s']:,} samples/s (validate + dedup + windows + KPIs), {t['windows']:,} windows",
        f"  latency at {lat['offered_samples_per_s']:,.0f} samples/s for {lat['duration_s']:.0f} s "
        f"({lat['samples']:,} samples):",
        row(".valid record", lat["valid"]),
        row("window (after final)", lat["windows"]),
    ])
