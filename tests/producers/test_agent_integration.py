"""Simulator → edge agent → real broker → consumer: the topic holds exactly the samples the sources emitted.

Each test runs the real agent (source threads under the supervisor, the durable spool, the idempotent
producer) with `topic_overrides` pointing `dyno.samples` at a fresh topic, records every batch the sources
handed to `emit` once `emit` returned (so: once it was durable), stops the agent (which drains), and compares
that with what a confluent-kafka consumer decodes from the topic, as multisets of samples and of batch ids.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from fleetstream.config import KafkaSettings
from fleetstream.producers.agent import Agent, AgentConfig, Emit, Record
from fleetstream.schemas.codec import decode, encode

pytestmark = pytest.mark.integration

SampleKey = tuple[str, int, float]


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[tuple[bytes, dict[str, Any]]]:
    """Every message in partition 0 of `topic`, up to its high watermark: (key, decoded dyno_sample_batch)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout_s)
        consumer.assign([TopicPartition(topic, 0, low)])
        out: list[tuple[bytes, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < high - low:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: read {len(out)} of {high - low} messages before timing out")
            # consume() waits for all of num_messages or the timeout: ask only for what is left
            for message in consumer.consume(num_messages=high - low - len(out), timeout=0.5):
                if message.error():
                    raise AssertionError(f"{topic}: {message.error()}")
                out.append((message.key() or b"", decode(message.value() or b"", "dyno_sample_batch")))
        return out
    finally:
        consumer.close()


def sample_keys(records: Sequence[dict[str, Any]]) -> Counter[SampleKey]:
    return Counter((r["channel"], s["timestamp_ms"], s["value"]) for r in records for s in r["samples"])


def recording_emits(agent: Agent) -> list[Record]:
    """Make every source's emit also keep what it spooled (appended only after the real emit returned)."""
    emitted: list[Record] = []
    lock = threading.Lock()
    real_emit_for = agent.emit_for

    def emit_for(name: str) -> Emit:
        inner = real_emit_for(name)

        def emit(records: Sequence[Record]) -> None:
            inner(records)
            with lock:
                emitted.extend(records)
        return emit

    agent.emit_for = emit_for  # type: ignore[method-assign]
    return emitted


def run_agent(tmp_path: Path, bootstrap: str, topic: str, sources: list[dict[str, Any]],
              until: Callable[[list[Record]], bool], timeout_s: float = 20.0,
              **config_options: Any) -> tuple[Agent, list[Record]]:
    config = AgentConfig.model_validate({
        "station_id": "cell-it", "spool_dir": str(tmp_path / "spool"), "metrics_port": None,
        "topic_overrides": {"dyno.samples": topic}, "sources": sources, **config_options})
    agent = Agent(config, KafkaSettings(bootstrap_servers=bootstrap))
    emitted = recording_emits(agent)
    agent.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not until(emitted) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        agent.stop(drain_timeout_s=20.0)
    assert until(emitted), f"sources emitted only {len(emitted)} records in {timeout_s} s: {agent.status()}"
    return agent, emitted


def samples_in(records: Sequence[Record]) -> int:
    return sum(len(r["samples"]) for _, _, r in records)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_topic_holds_exactly(bootstrap: str, topic: str, agent: Agent, emitted: list[Record]) -> None:
    assert agent.spool.pending_bytes() == 0, "the agent stopped with data still spooled"
    in_topic = read_topic(bootstrap, topic)
    records = [r for _, r in in_topic]
    emitted_records = [r for _, _, r in emitted]
    assert {key for key, _ in in_topic} == {b"cell-it"}
    assert len(records) == len(emitted_records) == agent.spool.stats.published_records
    assert Counter(r["batch_id"] for r in records) == Counter(r["batch_id"] for r in emitted_records)
    assert sample_keys(records) == sample_keys(emitted_records)
    assert sum(len(r["samples"]) for r in records) == agent.spool.stats.published_samples


def test_jetdrive_samples_on_loopback_multicast_reach_the_topic_exactly(
        tmp_path: Path, kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("agent-jetdrive")
    group, port = "239.255.43.77", free_udp_port()
    network = {"group": group, "port": port, "interface": "127.0.0.1"}
    agent, emitted = run_agent(tmp_path, kafka_bootstrap, topic, [
        {"name": "dyno", "type": "jetdrive", "options": {**network, "batch_interval_s": 0.1}},
        {"name": "dyno-sim", "type": "jetdrive_sim", "options": {**network, "seed": 3, "rate_hz": 100}},
    ], until=lambda e: samples_in(e) >= 2000)

    assert_topic_holds_exactly(kafka_bootstrap, topic, agent, emitted)
    channels = {r["channel"] for _, _, r in emitted}
    assert len(channels) == 9, channels  # every simulated channel, in canonical names
    status = agent.status()
    dyno = next(s for s in status["sources"] if s["name"] == "dyno")
    assert dyno["received_samples"] == samples_in(emitted)
    assert status["spool"]["failed_publishes"] == 0


def test_innovate_mts_over_a_pty_reaches_the_topic_exactly(
        tmp_path: Path, kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("agent-innovate")
    agent, emitted = run_agent(tmp_path, kafka_bootstrap, topic, [
        {"name": "wideband", "type": "innovate",
         "options": {"simulate": True, "seed": 5, "batch_interval_s": 0.5,
                     "aux": [{"name": "egt", "scale": 1.0, "offset": 0.0, "unit": "degF"}]}},
    ], until=lambda e: samples_in(e) >= 60)

    assert_topic_holds_exactly(kafka_bootstrap, topic, agent, emitted)
    ok = [r for _, _, r in emitted if r["sensor_state"] == "ok" and r["samples"]]
    assert ok, "the simulator should warm up and send lambda samples within the run"
    assert all(r["source"] == "innovate" for _, _, r in emitted)


@pytest.mark.slow
def test_a_small_spool_budget_drops_nothing_while_the_broker_is_up(
        tmp_path: Path, kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """Acknowledged data costs no budget: a 1 MB spool carries several MB when the broker keeps up."""
    topic = topic_factory("agent-budget")
    total = 200_000
    agent, emitted = run_agent(tmp_path, kafka_bootstrap, topic, [
        {"name": "numbers", "type": "counter", "options": {"rate_hz": 20_000, "batch_interval_s": 0.05,
                                                           "count": total}},
    ], until=lambda e: samples_in(e) >= total, timeout_s=90, spool_budget_mb=1)

    spooled_bytes = sum(len(encode("dyno_sample_batch", r)) for _, _, r in emitted)
    assert spooled_bytes > 2.5 * 1024 * 1024, "the run must put several budgets' worth through the spool"
    assert not agent.spool.stats.dropped_samples
    assert samples_in(emitted) == total
    assert_topic_holds_exactly(kafka_bootstrap, topic, agent, emitted)


@pytest.mark.slow
def test_edge_bench_measures_a_publishing_agent_process_and_a_full_drain(kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:
    from fleetstream.benchmarks.edge import bench_edge, to_table

    result = bench_edge(kafka_bootstrap, rate=500, seconds=3, outage_samples=20_000, work_dir=tmp_path)
    steady, drain = result["steady_state"], result["drain"]
    assert 10 < result["edge_rss_mb"] < 500  # a Python process with librdkafka, measured from /proc
    assert 0 <= result["edge_cpu_pct"] <= 100 * (os.cpu_count() or 1)
    assert steady["published_samples"] >= 500 * 3 and steady["records_in_topic"] == steady["published_records"]
    assert drain["outage_samples"] == 20_000
    assert drain["records_in_topic"] == drain["outage_records"] == 20_000 // 125 * 10  # 125-sample batches, 10 ch
    assert result["edge_drain_samples_per_s"] == pytest.approx(20_000 / drain["drain_s"], rel=0.05)
    assert "edge agent RSS" in to_table(result)
