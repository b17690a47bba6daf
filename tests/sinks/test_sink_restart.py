"""Sink processes: a SIGKILLed sink resumes within seconds, and a second sink on its store is refused clearly.

A restarted dynamic member cannot get its partitions until the group has given up on the dead one (the
session timeout, 45 s by default) and rebalanced, which is how three sink kills cost about 92 s. With a stable
`group.instance.id` (static membership, KIP-345, the default) the restarted sink is the same member and takes
its partitions back at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from fleetstream.config import KafkaSettings, Settings, group_instance_id, load_settings
from fleetstream.schemas.codec import encode
from fleetstream.store.client import embedded_path, is_embedded
from fleetstream.store.query_server import discover
from tests.sinks.test_sink_exactly_once import REPO, SinkProcess, make_records, stored_count, wait_until


def test_the_default_instance_id_is_stable_per_home_and_configurable(tmp_path: Path) -> None:
    first, second = group_instance_id(tmp_path / "a", None), group_instance_id(tmp_path / "b", None)
    assert first == group_instance_id(tmp_path / "a", None)  # the same sink restarted: the same member
    assert first and second and first != second  # another sink beside it: another member
    assert group_instance_id(tmp_path / "a", None, "g t1") != group_instance_id(tmp_path / "a", None, "g t1 t2")
    assert group_instance_id(tmp_path / "a", "sink-7") == "sink-7"
    assert group_instance_id(tmp_path / "a", "") is None  # "" = dynamic membership


def test_the_forwarder_consumer_is_a_static_member(tmp_path: Path) -> None:
    from fleetstream.sinks.graphql.consumer import GraphQLForwarder

    settings = Settings(home=tmp_path, graphql_endpoint="http://127.0.0.1:9/graphql",
                        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    with mock.patch("fleetstream.sinks.graphql.consumer.Consumer") as consumer:
        GraphQLForwarder(settings)._consumer_subscribed()
    config = consumer.call_args.args[0]
    topics = " ".join(sorted(settings.graphql.topics))
    assert config["group.instance.id"] == group_instance_id(tmp_path, None, f"{settings.graphql.group_id} {topics}")
    settings.graphql.instance_id = ""
    with mock.patch("fleetstream.sinks.graphql.consumer.Consumer") as consumer:
        GraphQLForwarder(settings)._consumer_subscribed()
    assert "group.instance.id" not in consumer.call_args.args[0]


def _batches_stored(settings: Settings) -> float:
    """The running sink's own count of stored batches (its Prometheus endpoint); -1 while it does not answer."""
    base = discover(embedded_path(settings.clickhouse_dsn))
    if base is None:
        return -1
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("fleetstream_sink_batches_total{"))


@dataclass(frozen=True)
class Restart:
    resumed_s: float
    """From the SIGKILL until the new process stored its first batch: process start, joining, storing."""
    assigned_s: float
    """From the new process's subscription until it had its partitions (the group's part; 1 s resolution)."""


def _log_time(log: str, marker: str) -> float:
    line = next(line for line in log.splitlines() if marker in line)
    hours, minutes, seconds = line.split()[0].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def restart_after_kills(env: dict[str, str], args: list[str], settings: Settings, topic: str, logs: Path,
                        kills: int) -> list[Restart]:
    """SIGKILL the sink `kills` times once it stores, restarting it at once each time."""
    sink = SinkProcess(env, args, logs / "sink-0.log")
    wait_until(lambda: stored_count(settings, topic) > 0, 120, "the first sink storing rows")
    restarts = []
    for kill in range(1, kills + 1):
        assert sink.kill() == -signal.SIGKILL
        killed_at = time.monotonic()
        sink = SinkProcess(env, args, logs / f"sink-{kill}.log")
        wait_until(lambda: _batches_stored(settings) > 0, 180, f"the sink restarted after kill {kill} storing")
        resumed_s = time.monotonic() - killed_at
        log = sink.log()
        restarts.append(Restart(resumed_s, _log_time(log, "assigned ") - _log_time(log, "sink subscribed")))
    sink.proc.send_signal(signal.SIGTERM)
    assert sink.wait(60) == 0, sink.log()
    return restarts


@pytest.fixture
def streaming_topic(kafka_bootstrap: str, topic_factory: Any) -> Iterator[str]:
    """A 3-partition topic receiving 10 signal batches a second for as long as the test runs."""
    from confluent_kafka import Producer

    topic = topic_factory(prefix="restart", partitions=3)
    stop = threading.Event()

    def stream() -> None:
        producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap).producer(**{"linger.ms": 5}))
        prefix = f"r{uuid.uuid4().hex[:6]}"
        round_ = 0
        while not stop.is_set():
            for r in make_records(f"{prefix}-{round_}")[:10]:
                producer.produce(topic, encode("signal_batch", r), key=r["vehicle_id"].encode())
            producer.poll(0)
            round_ += 1
            stop.wait(1.0)
        producer.flush(30)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    yield topic
    stop.set()
    streamer.join(30)


@pytest.mark.integration
@pytest.mark.slow
def test_a_sigkilled_sink_resumes_within_seconds(kafka_bootstrap: str, clickhouse_dsn: str, streaming_topic: str,
                                                 tmp_path: Path) -> None:
    if not is_embedded(clickhouse_dsn):
        pytest.skip("reads the restarted sink's own metrics endpoint, which an embedded store provides")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLICKHOUSE_DSN": clickhouse_dsn,
           "FLEETSTREAM_HOME": str(tmp_path / "home"), "FLEETSTREAM_CLICKHOUSE__BATCH_SECONDS": "0.3",
           "FLEETSTREAM_CLICKHOUSE__QUERY_PORT": "0", "PYTHONPATH": str(REPO)}
    env.pop("FLEETSTREAM_CLICKHOUSE__INSTANCE_ID", None)
    settings = load_settings(home=tmp_path / "home", kafka={"bootstrap_servers": kafka_bootstrap},
                             clickhouse={"dsn": clickhouse_dsn})
    args = ["--route", f"{streaming_topic}=samples:signal_batch", "--group", f"restart-{uuid.uuid4().hex[:8]}",
            "--no-dlq"]  # no group.instance.id given: the default makes the sink a static member
    restarts = restart_after_kills(env, args, settings, streaming_topic, tmp_path, kills=2)
    # A dynamic member waits out the dead one's 45 s session timeout before it gets partitions; a static one gets
    # them back at once. Only that part is asserted: the process start depends on how busy the machine is.
    assert max(r.assigned_s for r in restarts) < 15, restarts


@pytest.mark.integration
def test_a_second_sink_on_the_same_embedded_store_says_who_holds_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    # dynamic membership: this sink in the default group must leave it on exit, not linger as a static member
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "FLEETSTREAM_HOME": str(tmp_path / "home"),
           "FLEETSTREAM_CLICKHOUSE__QUERY_PORT": "0", "FLEETSTREAM_CLICKHOUSE__INSTANCE_ID": "",
           "PYTHONPATH": str(REPO)}
    env.pop("CLICKHOUSE_DSN", None)
    env.pop("FLEETSTREAM_CLICKHOUSE__DSN", None)
    store = tmp_path / "home" / "clickhouse"
    first = subprocess.Popen([sys.executable, "-m", "fleetstream", "sink", "clickhouse"], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=(tmp_path / "first.log").open("w"))
    try:
        wait_until(lambda: discover(store) is not None, 120, "the first sink serving its store")
        second = subprocess.run([sys.executable, "-m", "fleetstream", "sink", "clickhouse", "--seconds", "5"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first sink must keep running"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"error: the ClickHouse store {store.resolve()} is held by the running sink (pid {first.pid}) "
        "(stop the sink first; `fleetstream query` reads through it while it runs)"]
