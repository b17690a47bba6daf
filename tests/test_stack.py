"""The local Kafka stack: generated configuration and bookkeeping (unit), the broker's life cycle (integration)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from fleetstream import stack as stack_module
from fleetstream.admin import ensure_topics
from fleetstream.config import Settings, StackSettings
from fleetstream.stack import (
    KafkaStack,
    LocalCluster,
    StackError,
    _java_major,
    cluster_bootstrap,
    new_cluster_id,
    node_home,
    render_server_properties,
    resolve_jars,
)
from fleetstream.testing import docker_available, kafka_service, local_stack_settings, reap_orphaned_stacks

HAS_DOCKER, DOCKER_WHY = docker_available()


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def round_trip(bootstrap: str, topic: str, timeout_s: float = 30.0) -> tuple[bytes | None, bytes | None]:
    """Produce one record with acks=all and read it back from the start of the topic."""
    payload = uuid.uuid4().hex.encode()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, key=b"veh-1", value=payload)
    assert producer.flush(timeout_s) == 0, "the record was not acknowledged"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            assert error is None or error.code() == KafkaError._PARTITION_EOF, error
            if error is None:
                assert message.value() == payload
                return message.key(), message.value()
    finally:
        consumer.close()
    raise AssertionError(f"no record came back from {topic} within {timeout_s} s")


# --- unit: nothing running ---------------------------------------------------------------------------------


def test_server_properties_describe_a_single_node_kraft_broker_on_loopback(tmp_path: Path) -> None:
    props = parse_properties(render_server_properties(
        StackSettings(kafka_port=19092, controller_port=19093), tmp_path / "data"))

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "min.insync.replicas", "default.replication.factor"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "3"


def test_server_properties_take_auto_create_and_extra_overrides(tmp_path: Path) -> None:
    props = parse_properties(render_server_properties(StackSettings(), tmp_path, auto_create_topics=True,
                                                      extra={"num.partitions": "6", "log.retention.hours": "1"}))

    assert props["auto.create.topics.enable"] == "true"
    assert props["num.partitions"] == "6"
    assert props["log.retention.hours"] == "1"


def test_cluster_ids_look_like_kafka_random_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_392"', 8),
    ('openjdk version "21" 2023-09-19', 21),
    ("no version here", None),
])
def test_java_major_version_is_read_from_java_version_output(output: str, major: int | None) -> None:
    assert _java_major(output) == major


def test_complete_jar_cache_is_not_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "kafka-9.9.9" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-9.9.9.jar").write_bytes(b"jar")
    (tmp_path / "kafka-9.9.9" / "libs.complete.json").write_text(json.dumps({"jars": ["kafka_2.13-9.9.9.jar"]}))
    monkeypatch.setattr(stack_module, "_maven_copy_dependencies", _fail_if_called)

    assert resolve_jars(tmp_path, "9.9.9") == libs.resolve()


def test_half_downloaded_jar_cache_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "kafka-9.9.9"
    (root / "libs").mkdir(parents=True)  # jars present but no marker: the previous download was cut short
    (root / "libs" / "kafka_2.13-9.9.9.jar").write_bytes(b"partial")
    calls: list[str] = []

    def fake_maven(target: Path, version: str, pom: Path) -> list[str]:
        calls.append(version)
        (target / "libs" / "kafka-clients-9.9.9.jar").write_bytes(b"jar")
        return ["kafka-clients-9.9.9.jar", "kafka_2.13-9.9.9.jar"]

    monkeypatch.setattr(stack_module, "_maven_copy_dependencies", fake_maven)

    resolve_jars(tmp_path, "9.9.9")
    resolve_jars(tmp_path, "9.9.9")

    assert calls == ["9.9.9"]
    assert json.loads((root / "libs.complete.json").read_text())["jars"] == ["kafka-clients-9.9.9.jar",
                                                                              "kafka_2.13-9.9.9.jar"]


def _fail_if_called(*args: object) -> list[str]:
    raise AssertionError("Maven was called for a complete cache")


def test_stale_pid_file_of_another_process_is_not_a_running_broker(tmp_path: Path) -> None:
    stack = KafkaStack(Settings(home=tmp_path))
    stack.pid_path.parent.mkdir(parents=True)
    stack.pid_path.write_text(f"{os.getpid()}\n")  # a live process, but not our broker: a reused pid

    status = stack.status()

    assert not status.running and status.pid is None
    assert not stack.pid_path.exists()
    stack.down()  # nothing to stop is fine


def test_up_refuses_a_port_held_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        stack = KafkaStack(Settings(home=tmp_path, stack=StackSettings(kafka_port=port, controller_port=port + 1)))

        with pytest.raises(StackError, match=f"port {port} \\(kafka_port\\) on 127.0.0.1 is already in use"):
            stack.up(timeout_s=5)


def test_status_renders_as_text_and_json_friendly_dict(tmp_path: Path) -> None:
    status = KafkaStack(Settings(home=tmp_path, stack=StackSettings(kafka_port=19092))).status()

    assert "stopped" in status.to_text() and "127.0.0.1:19092" in status.to_text()
    assert json.loads(json.dumps(status.to_dict()))["bootstrap"] == "127.0.0.1:19092"


# --- integration: a real broker ----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_stack_life_cycle_is_idempotent_and_serves_clients(tmp_path: Path) -> None:
    stack = KafkaStack(local_stack_settings(tmp_path))
    try:
        first = stack.up(timeout_s=120)
        assert first.running and first.pid is not None and first.cluster_id

        ensure_topics(first.bootstrap, ["stack.roundtrip"], partitions=1)
        assert round_trip(first.bootstrap, "stack.roundtrip")[0] == b"veh-1"

        status = stack.status()
        assert status == first
        assert stack.up(timeout_s=5) == first  # already running: same broker, no second process
        assert KafkaStack(stack.settings).status().pid == first.pid  # another handle sees it through the pid file
    finally:
        stack.down()

    stopped = stack.status()
    assert not stopped.running and stopped.pid is None
    assert not stack.pid_path.exists()
    stack.down()  # stopping a stopped stack is fine


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("bad_property", "failure"), [
    # rejected by the storage format already, before any broker runs
    (("num.io.threads", "not-a-number"), "formatting the Kafka storage"),
    # only the running broker loads the authorizer class, so this one dies after the start
    (("authorizer.class.name", "org.example.NoSuchAuthorizer"), "exited during start-up"),
], ids=["rejected-by-format", "dies-after-start"])
def test_broker_that_cannot_start_is_reported_with_its_log(tmp_path: Path, bad_property: tuple[str, str],
                                                           failure: str) -> None:
    stack = KafkaStack(local_stack_settings(tmp_path), extra_properties=dict([bad_property]))

    with pytest.raises(StackError, match=failure) as caught:
        stack.up(timeout_s=60)

    assert bad_property[1] in str(caught.value)  # the log lines name the culprit
    assert not stack.status().running
    assert not stack.pid_path.exists()


@pytest.mark.integration
@pytest.mark.slow
def test_broker_leaked_by_a_dead_session_is_reaped_and_a_live_sessions_is_not(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leaked_scratch, live_scratch = tmp_path / "pytest-1" / "kafka0", tmp_path / "pytest-2" / "kafka0"
    leaked = KafkaStack(local_stack_settings(leaked_scratch / "stack"))
    try:
        pid = leaked.up(timeout_s=120).pid
        (leaked_scratch / "owner.pid").write_text(f"{dead.pid}\n")
        live_scratch.mkdir(parents=True)
        (live_scratch / "owner.pid").write_text(f"{os.getpid()}\n")

        assert reap_orphaned_stacks(tmp_path) == [pid]

        assert not leaked.status().running
        assert not (leaked_scratch / "owner.pid").exists()
        assert (live_scratch / "owner.pid").exists()
    finally:
        leaked.down()


@pytest.mark.integration
def test_topic_factory_gives_fresh_topics_on_the_session_broker(kafka_bootstrap: str, topic_factory) -> None:
    first, second = topic_factory(partitions=2), topic_factory()

    assert first != second
    assert round_trip(kafka_bootstrap, first)[1] is not None


@pytest.mark.integration
@pytest.mark.skipif(not HAS_DOCKER, reason=f"no Docker engine answers: {DOCKER_WHY}")
def test_testcontainers_kafka_serves_clients(tmp_path: Path) -> None:
    with kafka_service({}, tmp_path) as service:
        assert service.source == "docker"
        ensure_topics(service.address, ["tc.roundtrip"], partitions=1)
        assert round_trip(service.address, "tc.roundtrip")[0] == b"veh-1"


def test_cluster_nodes_are_voters_on_every_second_port_with_replicated_internal_topics(tmp_path: Path) -> None:
    stack = StackSettings(kafka_port=19092, controller_port=19093, brokers=3)

    nodes = [parse_properties(render_server_properties(stack, tmp_path / f"n{i}", node_id=i)) for i in (1, 2, 3)]

    assert [n["node.id"] for n in nodes] == ["1", "2", "3"]
    assert {n["controller.quorum.voters"] for n in nodes} == {"1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"}
    assert nodes[2]["listeners"] == "PLAINTEXT://127.0.0.1:19096,CONTROLLER://127.0.0.1:19097"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "default.replication.factor"):
        assert nodes[0][key] == "3", key
    assert nodes[0]["transaction.state.log.min.isr"] == "2"
    assert cluster_bootstrap(stack) == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"


def test_cluster_nodes_keep_their_files_apart_from_the_single_broker(tmp_path: Path) -> None:
    single = Settings(home=tmp_path)
    cluster = Settings(home=tmp_path, stack=StackSettings(brokers=3))

    assert node_home(single) == (tmp_path / "kafka").resolve()
    assert node_home(cluster, 2) == (tmp_path / "kafka-cluster" / "node-2").resolve()
    assert [n.bootstrap for n in LocalCluster(cluster).nodes] == ["127.0.0.1:9092", "127.0.0.1:9094",
                                                                   "127.0.0.1:9096"]


def test_status_finds_a_cluster_set_up_under_the_home_without_being_told_its_size(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        (tmp_path / "kafka-cluster" / f"node-{i}").mkdir(parents=True)

    found = LocalCluster.found(Settings(home=tmp_path))

    assert len(found.nodes) == 3 and found.status().running == 0
    assert "0 of 3 brokers running" in found.status().to_text()
    LocalCluster(Settings(home=tmp_path)).down()  # nothing runs: fine


@pytest.mark.integration
@pytest.mark.slow
def test_three_broker_cluster_replicates_topics_and_serves_clients_with_one_broker_down(
        kafka_cluster3: LocalCluster) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    from fleetstream.admin import create_topics
    from fleetstream.config import KafkaSettings, TopicSettings, TopicSpec

    name = f"cluster.replicated.{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_cluster3.bootstrap)
    report = create_topics(kafka, TopicSettings(topics=[TopicSpec(name=name)]))

    assert report.created == [name] and report.replication is not None
    assert (report.replication.factor, report.replication.min_insync, report.replication.brokers) == (3, 2, 3)
    admin = AdminClient({"bootstrap.servers": kafka_cluster3.bootstrap})
    partitions = admin.list_topics(name, timeout=10).topics[name].partitions.values()
    assert all(len(p.replicas) == 3 for p in partitions)
    configs = admin.describe_configs([ConfigResource("topic", name)])
    assert next(iter(configs.values())).result()["min.insync.replicas"].value == "2"

    victim = kafka_cluster3.nodes[2]
    pid = victim.status().pid
    assert pid is not None
    os.kill(pid, 9)
    try:
        # acks=all with min.insync.replicas=2: two of three brokers still take writes
        assert round_trip(kafka_cluster3.bootstrap, name, timeout_s=60)[0] == b"veh-1"
    finally:
        kafka_cluster3.up(timeout_s=120)  # restarts the killed node only
    assert kafka_cluster3.status().running == 3


def test_a_local_cluster_listens_outside_the_ephemeral_range_so_a_reconnecting_client_cannot_take_its_port(
        tmp_path: Path) -> None:
    from fleetstream.testing import _outside_ephemeral_range, free_port_block

    linux = tmp_path / "range"
    linux.write_text("32768\t60999\n")
    assert _outside_ephemeral_range(linux) == (10_000, 32_768)
    linux.write_text("1024 40000\n")
    assert _outside_ephemeral_range(linux) == (40_001, 65_536)
    assert _outside_ephemeral_range(tmp_path / "missing") == (10_000, 49_152)
    low, high = _outside_ephemeral_range()
    base = free_port_block(6)
    assert low <= base and base + 6 <= high
