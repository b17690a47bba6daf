"""Issue 17's proofs on a local three-broker cluster: a broker SIGKILLed mid-stream loses and duplicates nothing,
and a group of three workers, one SIGKILLed and one added mid-stream, computes exactly what one worker would.

Producers (`fleetstream simulate vehicles`, acks=all, idempotent), `fleetstream worker` and `fleetstream sink
clickhouse` run against the session's three-broker cluster, with every topic replicated three times and
`min.insync.replicas=2` (what `fleetstream topics create` makes there). One broker is SIGKILLed while samples flow
and stays down until the end; nothing is restarted by hand. Every sample the simulator produced must then be in
ClickHouse exactly once, the simulator must have exited 0 (Kafka acknowledged all of it), and the worker and the
sink must still report ready on their health endpoints.

A supervisor here plays systemd or Kubernetes for the worker only: the worker exits with 75 (EX_TEMPFAIL) by design
when its stream skipped offsets that do not come again after a seek back (streams/offsets.py), so that a restart
resumes from its owned offsets; that restart is automatic, and counted in the test's output. The sink must not exit.

The group test reuses the worker kill campaign's stream and checks (tests/streams/test_worker_kills.py): three
workers share the partitions of topics replicated three times while the stream is produced at a steady pace; one
worker is SIGKILLed for good and a fourth joins later, so the group rebalances twice with state moving between
workers. Every valid batch must then be on its `.valid` topic (repeats identical), and every window, late dead
letter, KPI and alert equal to the independent computation of test_worker_correctness.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetstream.admin import create_topics
from fleetstream.config import KafkaSettings, Settings
from fleetstream.demo import Services, _wait_for_sink
from fleetstream.schemas import codec
from fleetstream.stack import LocalCluster
from fleetstream.testing import free_ports
from fleetstream.topics import sample_count
from tests.pipeline import KPI_PERIOD_MS, MAX_AGE_MS, RETENTION_DAYS, Pipeline, TopicReader
from tests.streams.test_worker_correctness import Outputs, generate, produce, worker_env, worker_settings
from tests.streams.test_worker_kills import (
    IDLE_FLUSH_S,
    PACE_S,
    Group,
    _assert_results_exact,
    _assert_valid_exactly_once,
    _complete,
)
from tests.test_health import wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM_SECONDS = 24
KILL_AFTER_S = 8.0


@pytest.fixture
def cluster_pipeline(kafka_cluster3: LocalCluster, tmp_path: Path) -> Iterator[tuple[Pipeline, dict[str, str]]]:
    """Worker and sink children on the three-broker cluster, with fixed health addresses (part → host:port)."""
    settings = Settings(home=tmp_path / "home", kafka=KafkaSettings(bootstrap_servers=kafka_cluster3.bootstrap))
    report = create_topics(settings.kafka, settings.topics)
    assert report.replication is not None and report.replication.factor == 3
    worker_port, sink_port = free_ports(2)
    health = {"worker": f"127.0.0.1:{worker_port}", "clickhouse_sink": f"127.0.0.1:{sink_port}"}
    services = Services(settings)

    def start(name: str, *args: str) -> None:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("FLEETSTREAM_VALIDATION__MAX_AGE_MS", str(MAX_AGE_MS))
            env.setenv("FLEETSTREAM_CLICKHOUSE__RETENTION_DAYS", str(RETENTION_DAYS))
            env.setenv("FLEETSTREAM_STREAMS__KPI_PERIOD_MS", str(KPI_PERIOD_MS))
            env.setenv("FLEETSTREAM_HEALTH__WORKER", health["worker"])
            env.setenv("FLEETSTREAM_HEALTH__CLICKHOUSE_SINK", health["clickhouse_sink"])
            env.setenv("FLEETSTREAM_HEALTH__PROBE_INTERVAL_S", "1")
            env.delenv("FLEETSTREAM_CLICKHOUSE__DSN", raising=False)
            env.delenv("FLEETSTREAM_CONFIG", raising=False)
            services.start(name, *args)

    services.restart = start  # type: ignore[attr-defined]  # what the supervisor calls
    try:
        start("worker", "worker")
        start("sink-clickhouse", "sink", "clickhouse")
        _wait_for_sink(settings, services)
        for address in health.values():
            wait_for_status(address, 200, 180)
        yield Pipeline(settings, services), health
    finally:
        services.stop()


class Supervisor(threading.Thread):
    """Restarts the worker when it exits with 75 (asking to be restarted), as systemd's Restart= would."""

    def __init__(self, services: Services) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.restarts: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            worker = self.services.processes["worker"]
            if worker.poll() == 75:
                self.restarts.append(worker.returncode)
                self.services.restart("worker", "worker")  # type: ignore[attr-defined]


def read_decodable(reader: TopicReader, vehicles: list[str], quiet_s: float = 5.0) -> list[dict[str, Any]]:
    """The decodable records of `reader`'s topic until it has seen every vehicle and then `quiet_s` without a
    message (the simulator also sends undecodable messages on purpose: they become dead letters, not samples)."""
    consumer = reader._consumer
    records: list[dict[str, Any]] = []
    last = time.monotonic()
    deadline = last + 120
    while time.monotonic() < deadline:
        messages = consumer.consume(num_messages=1000, timeout=0.5)
        for message in messages:
            value = message.value()
            if message.error() is None and value is not None:
                with contextlib.suppress(codec.DecodeError):
                    records.append(codec.decode(value, "signal_batch"))
        if messages:
            last = time.monotonic()
        elif {r["vehicle_id"] for r in records} >= set(vehicles) and time.monotonic() - last > quiet_s:
            break
    return records


def test_a_broker_killed_mid_stream_loses_and_duplicates_no_sample(
        kafka_cluster3: LocalCluster, cluster_pipeline: tuple[Pipeline, dict[str, str]]) -> None:
    pipeline, health = cluster_pipeline
    first = random.randrange(100_000, 900_000, 10)
    vehicles = [str(v) for v in range(first, first + 3)]
    raw = TopicReader(pipeline.settings.kafka, ["telemetry.signals"])
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap}
    env.pop("FLEETSTREAM_CONFIG", None)
    simulator = subprocess.Popen(
        [sys.executable, "-m", "fleetstream", "simulate", "vehicles", "--seconds", str(STREAM_SECONDS),
         "--vehicles", "3", "--bad-sample-rate", "0", "--first-vehicle-id", str(first)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = kafka_cluster3.nodes[random.randrange(3)]
    supervisor = Supervisor(pipeline.services)
    supervisor.start()
    try:
        time.sleep(KILL_AFTER_S)
        pid = victim.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        output, _ = simulator.communicate(timeout=STREAM_SECONDS + 120)
        assert simulator.returncode == 0, output.decode(errors="replace")[-3000:]
        assert pipeline.services.processes["sink-clickhouse"].poll() is None, "the sink exited"

        produced = read_decodable(raw, vehicles)
        by_batch = {r["batch_id"]: sample_count("signal_batch", r) for r in produced if r["vehicle_id"] in vehicles}
        expected = sum(by_batch.values())
        assert expected > 0
        stored = pipeline.wait_for_rows(
            "SELECT vehicle_id, ts, channel FROM fleetstream.samples WHERE vehicle_id IN {v:Array(String)}",
            {"v": vehicles}, expected=expected, timeout_s=180, settle_s=5.0)
        assert len(stored) == expected, f"stored {len(stored)} samples of {expected} produced"
        assert len({(r["vehicle_id"], str(r["ts"]), r["channel"]) for r in stored}) == expected, "duplicates"
        for part, address in health.items():
            _, body = wait_for_status(address, 200, 120)
            assert body["checks"]["kafka"] == "ok", (part, body)
        print(f"{expected} samples stored once; broker node {victim.node_id} killed; worker restarts by the "
              f"supervisor: {len(supervisor.restarts)}")
    finally:
        supervisor.stop.set()
        raw.close()
        if simulator.poll() is None:
            simulator.kill()
        kafka_cluster3.up(timeout_s=180)  # the killed broker back for the session's other tests


# --- a group of three workers on the cluster: one SIGKILLed, one added mid-stream -----------------------------------

GROUP_SECONDS = 40  # of generated data: 20 wall seconds at the kill campaign's pace (longer on a loaded machine)
KILL_WORKER_AT_S = 5.0  # wall seconds after the stream started
ADD_WORKER_AT_S = 11.0


class SupervisedGroup(Group):
    """Worker processes of one group on the cluster. A worker that exits 75 (asking to be restarted, by design) is
    restarted as systemd's Restart= would, and counted; a worker this test SIGKILLed stays down; any other exit
    fails the test (`check`)."""

    def __init__(self, settings: Settings, count: int, tmp_path: Path):
        super().__init__(settings, count, tmp_path)
        self.killed: set[int] = set()
        self.started: set[int] = set()
        self.restarts: list[int] = []
        self.lock = threading.Lock()

    def start(self, index: int) -> None:
        with self.lock:
            super().start(index)
            self.started.add(index)

    def kill(self, index: int) -> None:
        with self.lock:
            self.killed.add(index)
            super().kill(index)

    def supervise(self) -> None:
        """Restart every worker that exited 75; raise (with its log's tail) for any other exit."""
        with self.lock:
            for index in sorted(self.started - self.killed):
                member = self.members[index]
                if member.processes["worker"].poll() == 75:
                    self.restarts.append(index)
                    member.start("worker", "worker")
                member.check()

    def check(self) -> None:
        self.supervise()

    def alive(self) -> int:
        return len(self.started - self.killed)


def wait_for_members(settings: Settings, group: SupervisedGroup, count: int, timeout_s: float = 180.0) -> float:
    """Until the workers' consumer group is stable with `count` members that all have partitions; seconds taken."""
    from confluent_kafka import ConsumerGroupState, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client())
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        group.supervise()
        try:
            description = admin.describe_consumer_groups([settings.streams.app_id])[settings.streams.app_id].result(
                timeout=10)
        except (KafkaException, concurrent.futures.TimeoutError):  # a new group's coordinator may still be loading
            time.sleep(0.5)
            continue
        if description.state == ConsumerGroupState.STABLE and len(description.members) == count and all(
                m.assignment.topic_partitions for m in description.members):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"the worker group did not become stable with {count} members within {timeout_s:.0f} s")


def test_a_group_of_three_workers_with_one_killed_and_one_added_computes_exactly(
        kafka_cluster3: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    worker_env(monkeypatch, f"fleetstream-cluster-group-{run}")
    monkeypatch.setenv("FLEETSTREAM_STREAMS__IDLE_FLUSH_S", str(IDLE_FLUSH_S))
    settings = worker_settings(kafka_cluster3.bootstrap, tmp_path / "home")
    data = generate(run, seconds=GROUP_SECONDS, seed=404)
    size = math.ceil(len(data.records) / GROUP_SECONDS)
    paced = [data.records[i:i + size] for i in range(0, len(data.records), size)]
    outputs = Outputs(settings, data.keys, extra_topics=("telemetry.signals.valid", "telemetry.gps.valid"))
    group = SupervisedGroup(settings, 4, tmp_path)  # three at the start, the fourth added mid-stream
    events: list[str] = []
    try:
        for index in range(3):
            group.start(index)
        joined_s = wait_for_members(settings, group, 3)
        events.append(f"3 workers stable after {joined_s:.1f} s")
        started = time.monotonic()
        for chunk in paced:
            produce(settings, chunk)
            outputs.poll(PACE_S)
            group.supervise()
            now = time.monotonic() - started
            if 1 not in group.killed and now >= KILL_WORKER_AT_S:
                group.kill(1)
                events.append(f"worker 1 SIGKILLed at {now:.1f} s")
            if 3 not in group.started and now >= ADD_WORKER_AT_S:
                group.start(3)
                events.append(f"worker 3 added at {now:.1f} s")
        events.append(f"stream produced in {time.monotonic() - started:.1f} s")
        assert group.killed == {1} and 3 in group.started, events
        complete = _complete(data, GROUP_SECONDS)
        try:
            outputs.settle(group, complete, timeout_s=240)  # type: ignore[arg-type]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {getattr(complete, 'missing', '')}; {events}; restarts on exit 75: "
                                 f"{group.restarts}") from None
        events.append(f"3 workers in the group at the end: {group.alive() == 3}")
    finally:
        outputs.close()
        group.stop()
    print("; ".join(events) + f"; worker restarts on exit 75 (by the supervisor): {len(group.restarts)} "
          f"{group.restarts}")
    repeats = _assert_valid_exactly_once(data, outputs)
    print(f"{repeats} .valid batches repeated identically after the kill")
    _assert_results_exact(data, outputs)
