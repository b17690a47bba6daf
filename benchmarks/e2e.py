"""`fleetstream bench e2e`: device timestamp → row queryable in ClickHouse, and the highest sustained rate.

The demo's pipeline processes run as children (`fleetstream worker` and `fleetstream sink clickhouse`, through
`fleetstream.demo.Services`, each with its own log under `home/logs`); this process is the devices: an
`EdgeProducer` publishing signal batches of 100 samples (50 vehicles x 7 channels, round robin) paced to the
offered rate, each batch's newest sample stamped with the send time (the 99 before it 1 ms apart).

* Latency: every `poll_s` the benchmark asks the running sink (its query endpoint,
`fleetstream.sinks.clickhouse.run_sql`)
  for `max(ts)` per (vehicle, channel). A batch is queryable at the first poll that shows its channel at or past
  the batch's newest sample; latency = that poll's answer time - the sample's device timestamp. Resolution is
  the poll interval plus the query's own time (reported). p50/p95/p99 over the batches sent after a warm-up.
* Latency per stage (`latency.stages`), so the slowest stage is visible: a tracer consumer in this process
  reads `telemetry.signals` and `telemetry.signals.valid` from their ends and notes when each batch id
  arrives on each. edge -> broker = raw arrival - device timestamp (the producer's linger, the broker's append,
  the fetch); worker = `.valid` arrival - raw arrival; sink = queryable (the poll above) - `.valid` arrival;
  query = the poll query's own time. p50/p95/p99 per stage over the same batches as the total.
* Sustained rate: offered rates step up (each for `step_seconds`, 60 s in the full run, 10 s with `quick`);
  every 2 s the backlog (samples handed to the producer - rows of the benchmark in `fleetstream.samples`, asked
  of the sink's query endpoint) is sampled; the noise stays within 3 sigma so every sample passes validation.
  A rate is sustained when the producer delivered >= 95 % of it and the backlog did not grow: its least-squares
  slope over the step is below 2 % of the offered rate and the final backlog is below 5 s of input.
  `sustained_samples_per_s` is the highest such rate; the search stops at the first failure. The worker and
  sink groups' committed lag (high watermark - committed offset) is reported beside it but not judged: faust
  commits its offsets late and in jumps, so its committed lag can grow for a minute while every sample is
  already stored.

The worker and sink groups have fixed names, so run this on a broker and home nobody else uses:
`bench_e2e_private` (what `fleetstream bench e2e` and `python -m fleetstream.benchmarks.e2e` call) starts a private
broker,
and the embedded ClickHouse store lives in a temporary home.
"""

from __future__ import annotations

import logging
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fleetstream.benchmarks.common import CHANNELS, SAMPLES_PER_MESSAGE, machine_info, machine_line, render_table
from fleetstream.config import Settings
from fleetstream.schemas.codec import serializer

__all__ = ["bench_e2e", "bench_e2e_private", "to_table"]

log = logging.getLogger(__name__)

VEHICLES = 50
WORKER_GROUP = "fleetstream-streams"
SINK_GROUP = "fleetstream-clickhouse"
WORKER_TOPICS = ("telemetry.signals", "telemetry.signals.valid")
SINK_TOPICS = ("telemetry.signals.valid",)


@dataclass
class _Sent:
    """Newest device timestamp and batch id of each batch sent, per (vehicle, channel), in send order."""

    batches: dict[tuple[str, str], list[tuple[int, str]]] = field(default_factory=dict)
    offered_samples: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _PacedProducer:
    """Publishes signal batches at `rate` samples/s from a thread until stopped."""

    def __init__(self, settings: Settings, sent: _Sent):
        from fleetstream.producers.edge import EdgeProducer

        self.edge = EdgeProducer(settings.kafka)
        self.sent = sent
        self.rng = random.Random(3)
        self.turn = 0

    def run(self, rate: float, seconds: float, stop: threading.Event) -> float:
        """Offer `rate` for `seconds`; returns the rate actually handed to the producer (samples/s)."""
        interval_s = SAMPLES_PER_MESSAGE / rate
        started = time.monotonic()
        sent = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                break
            due = int(elapsed / interval_s) + 1 - sent  # batches owed by now
            for _ in range(max(0, due)):
                self._publish_one()
                sent += 1
            if due <= 0:
                time.sleep(min(0.002, interval_s))
        self.edge.producer.poll(0)
        return sent * SAMPLES_PER_MESSAGE / max(1e-9, time.monotonic() - started)

    def _publish_one(self) -> None:
        vehicle, channel = self.turn % VEHICLES, (self.turn // VEHICLES) % len(CHANNELS)
        self.turn += 1
        name, unit, typical, noise = CHANNELS[channel]
        now_ms = int(time.time() * 1000)
        vehicle_id = str(1001 + vehicle)
        def value() -> float:  # within 3 sigma: inside every channel's range, so every sample is stored
            return round(typical + max(-3.0, min(3.0, self.rng.gauss(0, 1))) * noise, 3)

        batch_id = f"e2e-{vehicle_id}-{name}-{now_ms}-{self.turn}"
        record = {
            "batch_id": batch_id, "source": "bench-e2e", "org_id": "7",
            "fleet_id": "42", "vehicle_id": vehicle_id, "device_id": str(51_001 + vehicle), "name": name,
            "unit": unit,
            "samples": [{"timestamp_ms": now_ms - (SAMPLES_PER_MESSAGE - 1 - i),
                         "value": value()} for i in range(SAMPLES_PER_MESSAGE)],
        }
        self.edge.publish("telemetry.signals", vehicle_id, record)
        with self.sent.lock:
            self.sent.batches.setdefault((vehicle_id, name), []).append((now_ms, batch_id))
            self.sent.offered_samples += SAMPLES_PER_MESSAGE


def _visible(settings: Settings, since_ms: int) -> dict[tuple[str, str], int]:
    from fleetstream.sinks.clickhouse import run_sql

    _, rows = run_sql(settings, "SELECT vehicle_id, channel, toUnixTimestamp64Milli(max(ts)) FROM fleetstream.samples "
                                f"WHERE source = 'bench-e2e' AND ts >= fromUnixTimestamp64Milli({since_ms}) "
                                "GROUP BY vehicle_id, channel")
    return {(str(v), str(c)): int(t) for v, c, t in rows}


class _StageTracer:
    """Notes when each batch id arrives on the raw and on the `.valid` topic (wall ms), from a thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.arrived: dict[str, dict[str, float]] = {topic: {} for topic in WORKER_TOPICS}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="e2e-stage-tracer")

    def __enter__(self) -> _StageTracer:
        self.thread.start()
        if not self.ready.wait(60):
            raise RuntimeError("the e2e stage tracer did not get its partitions within 60 s")
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        codec = serializer(self.settings.kafka.schema_registry_url)
        consumer = Consumer(self.settings.kafka.client(**{"group.id": "bench-e2e-stages",
                                                          "enable.auto.commit": False}))
        try:
            metadata = consumer.list_topics(timeout=30).topics
            consumer.assign([TopicPartition(t, p, OFFSET_END) for t in WORKER_TOPICS for p in metadata[t].partitions])
            self.ready.set()
            while not self.stop.is_set():
                for message in consumer.consume(num_messages=1000, timeout=0.1):
                    if message.error() is None and message.value():
                        arrived_ms = time.time() * 1000
                        batch = codec.decode_batch(message.value() or b"", "signal_batch")
                        with self.lock:
                            self.arrived[message.topic() or ""][str(batch["batch_id"])] = arrived_ms
        finally:
            consumer.close()

    def stages(self, sent_ms: int, batch_id: str, queryable_ms: float) -> tuple[float, float, float] | None:
        """(edge -> broker, worker, sink) in ms for one batch, or None if the tracer missed one of its arrivals."""
        with self.lock:
            raw = self.arrived[WORKER_TOPICS[0]].get(batch_id)
            valid = self.arrived[WORKER_TOPICS[1]].get(batch_id)
        if raw is None or valid is None:
            return None
        return raw - sent_ms, valid - raw, queryable_ms - valid


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": ordered[-1]}


def _measure_latency(settings: Settings, producer: _PacedProducer, rate: float, seconds: float, warmup_s: float,
                     poll_s: float) -> dict[str, Any]:
    with _StageTracer(settings) as tracer:
        return _measure_latency_traced(settings, producer, rate, seconds, warmup_s, poll_s, tracer)


def _measure_latency_traced(settings: Settings, producer: _PacedProducer, rate: float, seconds: float,
                            warmup_s: float, poll_s: float, tracer: _StageTracer) -> dict[str, Any]:
    sent = producer.sent
    stop = threading.Event()
    since_ms = int(time.time() * 1000)
    achieved: list[float] = []
    thread = threading.Thread(target=lambda: achieved.append(producer.run(rate, seconds, stop)), daemon=True)
    thread.start()
    measure_from_ms = since_ms + int(warmup_s * 1000)
    latencies_ms: list[float] = []
    stages: list[tuple[float, float, float]] = []
    cursor: dict[tuple[str, str], int] = {}
    query_s: list[float] = []
    deadline = time.monotonic() + seconds + 60
    while time.monotonic() < deadline:
        asked = time.time()
        visible = _visible(settings, since_ms)
        answered = time.time()
        query_s.append(answered - asked)
        with sent.lock:
            pending = 0
            for channel, times in sent.batches.items():
                i = cursor.get(channel, 0)
                newest = visible.get(channel)
                while i < len(times) and newest is not None and times[i][0] <= newest:
                    sent_ms, batch_id = times[i]
                    if sent_ms >= measure_from_ms:
                        latencies_ms.append(answered * 1000 - sent_ms)
                        traced = tracer.stages(sent_ms, batch_id, answered * 1000)
                        if traced is not None:
                            stages.append(traced)
                    i += 1
                cursor[channel] = i
                pending += len(times) - i
        if not thread.is_alive() and pending == 0:
            break
        time.sleep(max(0.0, poll_s - (time.time() - asked)))
    stop.set()
    thread.join()
    producer.edge.flush()
    if not latencies_ms:
        raise RuntimeError("no batch became queryable; see the worker and sink logs")
    stage_names = ("edge_to_broker", "worker", "sink")
    return {"offered_samples_per_s": rate, "achieved_samples_per_s": achieved[0] if achieved else 0.0,
            "batches_measured": len(latencies_ms), **_percentiles(latencies_ms),
            "query_median_ms": statistics.median(query_s) * 1000, "poll_s": poll_s,
            "stages": {name: _percentiles([s[k] for s in stages]) for k, name in enumerate(stage_names)},
            "batches_traced": len(stages)}


def _lag(admin: Any, consumer: Any, group: str, topics: tuple[str, ...], attempts: int = 10) -> int:
    """Messages of `topics` not yet committed by `group`; retried, since a fresh broker's group coordinator
    answers COORDINATOR_LOAD_IN_PROGRESS (and a rebalancing group NOT_COORDINATOR) for a while."""
    from confluent_kafka import KafkaException

    for attempt in range(attempts):
        try:
            return _lag_once(admin, consumer, group, topics)
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _lag_once(admin: Any, consumer: Any, group: str, topics: tuple[str, ...]) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    partitions = [TopicPartition(t, p) for t in topics
                  for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    committed = admin.list_consumer_group_offsets(request)[group].result(timeout=10).topic_partitions
    total = 0
    for tp in committed:
        high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
        total += high - (tp.offset if tp.offset >= 0 else 0)
    return total


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def _stored(settings: Settings) -> int:
    """Rows of this benchmark in ClickHouse (the sink stores each batch id once, so no duplicates)."""
    from fleetstream.sinks.clickhouse import run_sql

    _, rows = run_sql(settings, "SELECT count() FROM fleetstream.samples WHERE source = 'bench-e2e'")
    return int(rows[0][0])


def _step(settings: Settings, producer: _PacedProducer, rate: float, seconds: float) -> dict[str, Any]:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client())
    consumer = Consumer(settings.kafka.client(**{"group.id": "bench-e2e-lag"}))
    stop = threading.Event()
    achieved: list[float] = []
    thread = threading.Thread(target=lambda: achieved.append(producer.run(rate, seconds, stop)), daemon=True)
    started = time.monotonic()
    thread.start()
    backlog: list[tuple[float, float]] = []
    lags: dict[str, list[tuple[float, float]]] = {"worker": [], "sink": []}
    try:
        while thread.is_alive():
            t = time.monotonic() - started
            stored = _stored(settings)
            with producer.sent.lock:
                offered = producer.sent.offered_samples
            backlog.append((t, offered - stored))
            lags["worker"].append((t, _lag(admin, consumer, WORKER_GROUP, WORKER_TOPICS)))
            lags["sink"].append((t, _lag(admin, consumer, SINK_GROUP, SINK_TOPICS)))
            thread.join(2.0)
    finally:
        stop.set()
        thread.join()
        consumer.close()
    result: dict[str, Any] = {"offered_samples_per_s": rate, "achieved_samples_per_s": achieved[0] if achieved else 0.0}
    # Skip the first point: the pipeline picks up the step's first seconds of traffic.
    slope = _slope(backlog[1:])
    final = backlog[-1][1] if backlog else 0.0
    result["backlog_slope_samples_per_s"] = slope
    result["final_backlog_samples"] = final
    for name, points in lags.items():
        result[f"{name}_committed_lag_slope_msgs_per_s"] = _slope(points[1:])
        result[f"{name}_final_committed_lag_msgs"] = points[-1][1] if points else 0.0
    result["sustained"] = (result["achieved_samples_per_s"] >= 0.95 * rate
                           and slope < 0.02 * rate and final < 5 * rate)
    return result


def _drain(settings: Settings, producer: _PacedProducer, timeout_s: float = 120.0) -> bool:
    """Wait until every sample offered so far is stored, so each step starts from an empty pipeline."""
    producer.edge.flush()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with producer.sent.lock:
            offered = producer.sent.offered_samples
        if _stored(settings) >= offered:
            return True
        time.sleep(1.0)
    return False


def bench_e2e(settings: Settings, rate: float = 50_000, seconds: float = 30, quick: bool = False,
              rates: tuple[float, ...] = (5_000, 10_000, 25_000, 50_000, 100_000, 200_000),
              step_seconds: float | None = None, warmup_s: float = 5.0, poll_s: float = 0.25) -> dict[str, Any]:
    """Run the pipeline on `settings` (its broker and home must be the benchmark's own) and measure."""
    import os

    from fleetstream.admin import create_topics, ensure_topics, wait_for_group
    from fleetstream.demo import Services, _wait_for_sink
    from fleetstream.testing import free_ports

    step_seconds = step_seconds or (10.0 if quick else 60.0)
    # The children read their settings from the environment; give the sink's query endpoint a free port.
    os.environ["FLEETSTREAM_CLICKHOUSE__QUERY_PORT"] = str(free_ports(1)[0])
    settings = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
        update={"query_port": int(os.environ["FLEETSTREAM_CLICKHOUSE__QUERY_PORT"])})})
    create_topics(settings.kafka, settings.topics)
    ensure_topics(settings.kafka.bootstrap_servers, [t.name for t in settings.topics.topics])
    services = Services(settings)
    sent = _Sent()
    try:
        services.start("worker", "worker")
        services.start("sink-clickhouse", "sink", "clickhouse")
        _wait_for_sink(settings, services)
        wait_for_group(settings.kafka, WORKER_GROUP, check=services.check)
        producer = _PacedProducer(settings, sent)
        latency = _measure_latency(settings, producer, rate, seconds, warmup_s, poll_s)
        services.check()
        steps: list[dict[str, Any]] = []
        sustained = 0.0
        for step_rate in rates:
            if not _drain(settings, producer):
                log.warning("e2e: the pipeline did not drain before the %s samples/s step", step_rate)
            step = _step(settings, producer, step_rate, step_seconds)
            services.check()
            steps.append(step)
            log.info("e2e step %s", step)
            if not step["sustained"]:
                break
            sustained = step_rate
        producer.edge.flush()
    finally:
        services.stop()
    return {
        "machine": machine_info(settings.stack.kafka_version),
        "workload": {"samples_per_message": SAMPLES_PER_MESSAGE, "vehicles": VEHICLES, "channels": len(CHANNELS),
                     "latency_rate": rate, "latency_seconds": seconds, "warmup_s": warmup_s,
                     "step_seconds": step_seconds, "rates": list(rates), "clickhouse": settings.clickhouse_dsn,
                     "sink_batch_rows": settings.clickhouse.batch_rows,
                     "sink_batch_seconds": settings.clickhouse.batch_seconds},
        "latency": latency,
        "steps": steps,
        "e2e_p50_ms_at_50k": latency["p50_ms"] if rate == 50_000 else None,
        "e2e_p95_ms_at_50k": latency["p95_ms"] if rate == 50_000 else None,
        "e2e_p99_ms_at_50k": latency["p99_ms"] if rate == 50_000 else None,
        "sustained_samples_per_s": sustained,
    }


def to_table(report: dict[str, Any]) -> str:
    lat = report["latency"]
    rows: list[list[Any]] = [[f"latency at {lat['offered_samples_per_s']:,.0f}/s (achieved "
                              f"{lat['achieved_samples_per_s']:,.0f})", f"{lat['p50_ms']:,.0f}",
                              f"{lat['p95_ms']:,.0f}", f"{lat['p99_ms']:,.0f}", ""]]
    for name, stage in lat.get("stages", {}).items():
        if stage:
            rows.append([f"  stage {name.replace('_', ' ')}", f"{stage['p50_ms']:,.0f}", f"{stage['p95_ms']:,.0f}",
                         f"{stage['p99_ms']:,.0f}", ""])
    for step in report["steps"]:
        rows.append([f"step {step['offered_samples_per_s']:,.0f}/s (achieved {step['achieved_samples_per_s']:,.0f})",
                     f"backlog slope {step['backlog_slope_samples_per_s']:,.0f}/s",
                     f"final backlog {step['final_backlog_samples']:,.0f}",
                     f"committed lag w/s {step['worker_final_committed_lag_msgs']:.0f}"
                     f"/{step['sink_final_committed_lag_msgs']:.0f} msgs",
                     "ok" if step["sustained"] else "GROWING"])
    notes = [f"sustained_samples_per_s = {report['sustained_samples_per_s']:,.0f} "
             f"({report['workload']['step_seconds']:.0f} s per step)",
             f"latency = first poll showing the row - device timestamp; poll every {lat['poll_s']} s, "
             f"query median {lat['query_median_ms']:.0f} ms; {lat['batches_measured']:,} batches",
             machine_line(report["machine"])]
    return render_table("bench e2e: device timestamp -> queryable in ClickHouse",
                        ["measurement", "p50 ms", "p95 ms", "p99 ms", ""], rows, notes)


def bench_e2e_private(base: Settings, **options: Any) -> dict[str, Any]:
    """`bench_e2e` on a private broker and a temporary home with an embedded ClickHouse, removed afterwards."""
    from fleetstream.benchmarks.common import private_pipeline_settings

    with private_pipeline_settings(base, "e2e") as settings:
        return bench_e2e(settings, **options)


def main() -> None:
    """`python -m fleetstream.benchmarks.e2e [--quick] [--json]` on a private broker and a temporary home."""
    import argparse

    from fleetstream.benchmarks.common import render_json

    parser = argparse.ArgumentParser(description="end-to-end latency and sustained rate")
    parser.add_argument("--rate", type=float, default=50_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--quick", action="store_true", help="10 s per sustained-rate step instead of 60 s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    report = bench_e2e_private(Settings(), rate=args.rate, seconds=args.seconds, quick=args.quick)
    print(render_json(report) if args.json else to_table(report))


if __name__ == "__main__":
    main()
