"""`fleetstream bench soak`: steady load through producer -> worker -> ClickHouse sink while parts are SIGKILLed.

The pipeline runs as the demo runs it (`fleetstream worker` and `fleetstream sink clickhouse` as children, on a
private broker and a temporary home). This process is the devices: an `EdgeProducer` publishing signal batches of
100 samples (50 vehicles x 7 channels, round robin, every batch id unique) at a steady `rate`. Every
`kill_every_s` (+-30 %, seeded) the worker or the sink, chosen at random, is SIGKILLed and restarted at once.

- `soak_samples`: samples the broker acknowledged to the producer (the ground truth).
- `soak_lost` / `soak_duplicated`: after the load stops and the pipeline drains, distinct samples of the run in
  ClickHouse (by vehicle, channel and event time, unique per sample here) short of `soak_samples`, and rows beyond
  the distinct ones.
- recovery of a kill: from the kill to the first new progress of the killed part: for the worker, a new record
  on `telemetry.signals.valid` (its end offsets move past where they were when it died); for the sink, its
  consumer group's committed offsets moving on (it commits after each insert). `soak_recovery_p50_s` /
  `soak_recovery_max_s` over the kills.

With `brokers` > 1 the soak runs on a private local cluster of that many KRaft nodes (topics replicated from the
cluster: 3 copies, `min.insync.replicas` 2) and a broker is one more part to kill: a random node is SIGKILLed and
restarted at once. Its recovery is from the kill until the node is back and every partition of every topic has
all its replicas in sync again (the cluster can lose another broker without stopping), and the worker's output
has moved on since the kill (the pipeline did not stall).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetstream.benchmarks.common import CHANNELS, SAMPLES_PER_MESSAGE, machine_info, machine_line, render_table
from fleetstream.config import Settings

if TYPE_CHECKING:
    from fleetstream.stack import LocalCluster

__all__ = ["bench_soak", "bench_soak_private", "to_table"]

log = logging.getLogger(__name__)

VEHICLES = 50
SOURCE = "bench-soak"
SINK_GROUP = "fleetstream-clickhouse"
PARTS = {"worker": ("worker",), "sink-clickhouse": ("sink", "clickhouse")}
"""Child name -> its `fleetstream` arguments."""
BROKER = "broker"


@dataclass
class Kill:
    part: str
    at_s: float
    recovery_s: float | None = None
    restarted_s: float | None = None
    """A broker's: from the kill until the restarted node is in the cluster's metadata again (the rest of its
    recovery is catching up until every replica is in sync)."""


@dataclass
class _Load:
    """Publishes signal batches at `rate` samples/s from a thread until stopped."""

    settings: Settings
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    sent_samples: int = 0

    def run(self) -> None:
        from fleetstream.producers.edge import EdgeProducer

        rng = random.Random(7)
        interval_s = SAMPLES_PER_MESSAGE / self.rate
        with EdgeProducer(self.settings.kafka) as self.producer:
            started, turn = time.monotonic(), 0
            while not self.stop.is_set():
                due = int((time.monotonic() - started) / interval_s) + 1 - turn
                for _ in range(max(0, due)):
                    self._publish(turn, rng)
                    turn += 1
                if due <= 0:
                    time.sleep(min(0.005, interval_s))

    def _publish(self, turn: int, rng: random.Random) -> None:
        vehicle, channel = turn % VEHICLES, (turn // VEHICLES) % len(CHANNELS)
        name, unit, typical, noise = CHANNELS[channel]
        vehicle_id, now_ms = str(1001 + vehicle), int(time.time() * 1000)
        record = {"batch_id": f"soak-{vehicle_id}-{name}-{now_ms}-{turn}", "source": SOURCE, "org_id": "7",
                  "fleet_id": "42", "vehicle_id": vehicle_id, "device_id": str(51_001 + vehicle), "name": name,
                  "unit": unit,
                  "samples": [{"timestamp_ms": now_ms - (SAMPLES_PER_MESSAGE - 1 - i),
                               "value": round(typical + max(-3.0, min(3.0, rng.gauss(0, 1))) * noise, 3)}
                              for i in range(SAMPLES_PER_MESSAGE)]}
        self.producer.publish("telemetry.signals", vehicle_id, record)
        self.sent_samples += SAMPLES_PER_MESSAGE

    @property
    def acknowledged(self) -> int:
        return int(self.producer.delivered_samples[SOURCE])


def _progress(admin: Any, consumer: Any, part: str, sink_group: str) -> int | None:
    """How far `part` has got: the worker's output end offsets, or the sink group's committed offsets (None
    while the broker cannot answer)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

    topic = "telemetry.signals.valid"
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=5).topics[topic].partitions]
        if part == "worker":
            return sum(consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in partitions)
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(sink_group, partitions)])
        return sum(max(0, tp.offset) for tp in result[sink_group].result(timeout=5).topic_partitions)
    except KafkaException:
        return None


def _stored(settings: Settings) -> tuple[int, int]:
    """(rows, distinct samples) of this run in ClickHouse, asked of the running sink."""
    from fleetstream.sinks.clickhouse import run_sql

    _, rows = run_sql(settings, "SELECT count(), uniqExact(vehicle_id, channel, ts) FROM fleetstream.samples "
                                f"WHERE source = '{SOURCE}'")
    return int(rows[0][0]), int(rows[0][1])


def bench_soak(settings: Settings, minutes: float = 20.0, seed: int = 1, rate: float = 5_000,
               kill_every_s: float = 120.0, drain_timeout_s: float = 300.0,
               cluster: LocalCluster | None = None) -> dict[str, Any]:
    """Run the soak on `settings` (its broker and home must be the benchmark's own) and report; with `cluster`
    (the cluster `settings` points at) its brokers are killed and restarted too."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from fleetstream.admin import create_topics
    from fleetstream.demo import Services, _wait_for_sink
    from fleetstream.testing import free_ports

    os.environ["FLEETSTREAM_CLICKHOUSE__QUERY_PORT"] = str(free_ports(1)[0])
    settings = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
        update={"query_port": int(os.environ["FLEETSTREAM_CLICKHOUSE__QUERY_PORT"])})})
    create_topics(settings.kafka, settings.topics)
    services = Services(settings)
    admin = AdminClient(settings.kafka.client())
    consumer = Consumer(settings.kafka.client(**{"group.id": "bench-soak-offsets"}))
    rng = random.Random(seed)
    targets = sorted(PARTS) + ([BROKER] if cluster is not None else [])
    load = _Load(settings, rate)
    kills: list[Kill] = []
    try:
        for name, args in PARTS.items():
            services.start(name, *args)
        _wait_for_sink(settings, services)
        _wait_for_worker(settings, services)
        loader = threading.Thread(target=load.run, name="soak-load", daemon=True)
        loader.start()
        started = time.monotonic()
        end = started + minutes * 60
        while True:
            pause = kill_every_s * rng.uniform(0.7, 1.3)
            if time.monotonic() + pause >= end:
                break
            time.sleep(pause)
            part = rng.choice(targets)
            if part == BROKER:
                assert cluster is not None
                kills.append(_kill_broker_and_recover(cluster, rng, services, admin, consumer, started))
            else:
                kills.append(_kill_and_recover(services, part, admin, consumer, started))
        time.sleep(max(0.0, end - time.monotonic()))
        load.stop.set()
        loader.join(60)
        load.producer.flush(30)
        produced = load.acknowledged
        rows, distinct = _drain(settings, services, produced, drain_timeout_s)
    finally:
        load.stop.set()
        consumer.close()
        services.stop()
    recoveries = [k.recovery_s for k in kills if k.recovery_s is not None]
    return {
        "machine": machine_info(settings.stack.kafka_version),
        "workload": {"brokers": len(cluster.nodes) if cluster else 1, "minutes": minutes, "seed": seed,
                     "rate_samples_per_s": rate, "kill_every_s": kill_every_s,
                     "samples_per_message": SAMPLES_PER_MESSAGE, "vehicles": VEHICLES, "channels": len(CHANNELS)},
        "kills": [{"part": k.part, "at_s": round(k.at_s, 1), "recovery_s": k.recovery_s}
                  | ({"restarted_s": k.restarted_s} if k.restarted_s is not None else {}) for k in kills],
        "soak_samples": produced,
        "soak_kills": len(kills),
        "soak_lost": produced - distinct,
        "soak_duplicated": rows - distinct,
        "soak_recovery_p50_s": statistics.median(recoveries) if recoveries else None,
        "soak_recovery_max_s": max(recoveries) if recoveries else None,
        "soak_unrecovered_kills": len(kills) - len(recoveries),
    }


def _wait_for_worker(settings: Settings, services: Any, timeout_s: float = 180.0) -> None:
    """Until the worker's group is stable with partitions; asked again while a busy or fresh broker's group
    coordinator cannot answer in time."""
    from confluent_kafka import KafkaException

    from fleetstream.admin import wait_for_group

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            remaining_s = max(1.0, deadline - time.monotonic())
            wait_for_group(settings.kafka, settings.streams.app_id, timeout_s=remaining_s, check=services.check)
            return
        except (KafkaException, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _kill_and_recover(services: Any, part: str, admin: Any, consumer: Any, started: float,
                      timeout_s: float = 180.0) -> Kill:
    """SIGKILL `part`, restart it at once, and time until it makes progress again (`_progress`)."""
    process = services.processes[part]
    killed_at = time.monotonic()
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    before = _progress(admin, consumer, part, SINK_GROUP)  # the dead process moves nothing any more
    services.start(part, *PARTS[part])
    kill = Kill(part, killed_at - started)
    log.info("soak: killed %s at %.1f s", part, kill.at_s)
    while time.monotonic() - killed_at < timeout_s:
        services.check()
        now = _progress(admin, consumer, part, SINK_GROUP)
        if before is None:
            before = now
        elif now is not None and now > before:
            kill.recovery_s = round(time.monotonic() - killed_at, 2)
            break
        time.sleep(0.25)
    log.info("soak: %s recovered after %s s", part, kill.recovery_s)
    return kill


def _kill_broker_and_recover(cluster: LocalCluster, rng: random.Random, services: Any, admin: Any, consumer: Any,
                             started: float, timeout_s: float = 180.0) -> Kill:
    """SIGKILL a random broker of `cluster`, restart it at once, and time until it is whole again
    (`_replicas_complete`) and the worker's output moved on since the kill."""
    node = rng.choice(cluster.nodes)
    pid = node.status().pid
    if pid is None:
        raise RuntimeError(f"broker node {node.node_id} of the soak's cluster is not running")
    before = _progress(admin, consumer, "worker", SINK_GROUP)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    kill = Kill(f"{BROKER}-{node.node_id}", killed_at - started)
    log.info("soak: killed broker node %d at %.1f s", node.node_id, kill.at_s)
    while node._running_pid() is not None and time.monotonic() - killed_at < 10:
        time.sleep(0.1)
    if not _restart(cluster, killed_at + timeout_s):
        return kill  # counted as unrecovered; the soak goes on with the others
    kill.restarted_s = round(time.monotonic() - killed_at, 2)
    while time.monotonic() - killed_at < timeout_s:
        services.check()
        now = _progress(admin, consumer, "worker", SINK_GROUP)
        if before is None:
            before = now
        elif now is not None and now > before and _replicas_complete(consumer):
            kill.recovery_s = round(time.monotonic() - killed_at, 2)
            break
        time.sleep(0.5)
    log.info("soak: broker node %d back after %s s, whole again after %s s", node.node_id, kill.restarted_s,
             kill.recovery_s)
    return kill


def _restart(cluster: LocalCluster, deadline: float) -> bool:
    """Start the cluster's stopped node again, retried until `deadline` (a failed start is logged, not raised)."""
    from fleetstream.stack import StackError

    while time.monotonic() < deadline:
        try:
            cluster.up(timeout_s=max(10.0, deadline - time.monotonic()))
            return True
        except StackError as exc:
            log.error("soak: restarting the killed broker failed: %s", exc)
            time.sleep(2.0)
    return False


def _replicas_complete(consumer: Any) -> bool:
    """Every partition of every topic has all its replicas in sync (False while the metadata cannot be read)."""
    from confluent_kafka import KafkaException

    try:
        topics = consumer.list_topics(timeout=5).topics
    except KafkaException:
        return False
    return all(p.error is None and len(p.isrs) == len(p.replicas)
               for t in topics.values() for p in t.partitions.values())


def _drain(settings: Settings, services: Any, produced: int, timeout_s: float) -> tuple[int, int]:
    """Wait until every acknowledged sample is stored (or the time is up); the final (rows, distinct)."""
    deadline = time.monotonic() + timeout_s
    rows, distinct = 0, 0
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        services.check()
        current = _stored(settings)
        if current != (rows, distinct):
            rows, distinct = current
            stable_since = time.monotonic()
        if distinct >= produced and time.monotonic() - stable_since > 5.0:  # and no late repeats
            break
        time.sleep(1.0)
    return rows, distinct


def to_table(report: dict[str, Any]) -> str:
    rows: list[list[Any]] = [[f"kill {i + 1}: {k['part']}", f"{k['at_s']:.0f} s",
                              "never" if k["recovery_s"] is None else f"{k['recovery_s']:.1f} s"]
                             for i, k in enumerate(report["kills"])]
    p50, top = report["soak_recovery_p50_s"], report["soak_recovery_max_s"]
    notes = [f"samples {report['soak_samples']:,}, lost {report['soak_lost']:,}, duplicated "
             f"{report['soak_duplicated']:,}; recovery p50 {p50} s, max {top} s",
             f"{report['workload']['minutes']} min at {report['workload']['rate_samples_per_s']:,.0f} samples/s, "
             f"a kill every ~{report['workload']['kill_every_s']:.0f} s (seed {report['workload']['seed']})",
             machine_line(report["machine"])]
    brokers = report["workload"].get("brokers", 1)
    title = ("bench soak: SIGKILLs of the worker and the sink under steady load" if brokers == 1 else
             f"bench soak: SIGKILLs of the worker, the sink and brokers of {brokers} under steady load")
    return render_table(title,
                        ["kill", "at", "recovered after"], rows, notes)


def bench_soak_private(base: Settings, brokers: int = 1, **options: Any) -> dict[str, Any]:
    """`bench_soak` on a private broker (or a private cluster of `brokers` nodes, whose brokers are killed too) and
    a temporary home with an embedded ClickHouse, removed afterwards."""
    from fleetstream.benchmarks.common import private_cluster_pipeline, private_pipeline_settings

    if brokers > 1:
        with private_cluster_pipeline(base, "soak", brokers) as (settings, cluster):
            return bench_soak(settings, cluster=cluster, **options)
    with private_pipeline_settings(base, "soak") as settings:
        return bench_soak(settings, **options)
