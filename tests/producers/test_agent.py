"""Unit tests of the edge agent's logic without a broker: breaker, backoff, supervisor, emit, status, counter.

Publishing is replaced by a recording function with the `Publish` signature, so these prove the shell's
bookkeeping; tests/producers/test_agent_integration.py and test_agent_faults.py prove it on a real broker.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import KafkaSettings
from fleetstream.producers.agent import Agent, AgentConfig, Emit, Source, SourceSpec, read_status
from fleetstream.producers.reliability import Backoff, CircuitBreaker
from fleetstream.producers.sources import CounterStream, build_source
from fleetstream.producers.spool import SpoolEntry
from fleetstream.schemas.codec import decode

UNREACHABLE = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # never contacted: publishing is replaced


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class RecordingPublish:
    """Acks everything (or raises for the first `raise_times` calls) and keeps what it was given."""

    def __init__(self, raise_times: int = 0):
        self.entries: list[SpoolEntry] = []
        self.raise_times = raise_times
        self.calls = 0

    def __call__(self, entries: Sequence[SpoolEntry]) -> list[bool]:
        self.calls += 1
        if self.calls <= self.raise_times:
            raise RuntimeError("librdkafka exploded")
        self.entries.extend(entries)
        return [True] * len(entries)


def make_agent(tmp_path: Path, sources: dict[str, Source] | None = None, **config: Any) -> Agent:
    specs = [SourceSpec(name=n, type="test") for n in (sources or {})]
    cfg = AgentConfig(spool_dir=tmp_path / "spool", metrics_port=None, sources=specs, **config)
    return Agent(cfg, UNREACHABLE, sources=sources or {})


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.stop(drain_timeout_s=0.5)


def dyno_record(batch_id: str, values: Sequence[float], channel: str = "rpm") -> dict[str, Any]:
    return {"batch_id": batch_id, "source": "test", "station_id": "s1", "provider": "", "run_id": "",
            "channel": channel, "unit": "rpm", "sensor_state": "ok",
            "samples": [{"timestamp_ms": 1_700_000_000_000 + i, "value": v, "flags": 0} for i, v in enumerate(values)]}


# --- circuit breaker ------------------------------------------------------------------------------------


def test_breaker_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10, success_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # not consecutive any more
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_breaker_half_opens_after_the_timeout_and_closes_after_m_successes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=10, success_threshold=3, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 4
    assert not breaker.allow()
    assert breaker.seconds_until_retry() == pytest.approx(6)
    clock.now += 5.999
    assert not breaker.allow() and breaker.state == "open"
    clock.now += 0.001
    assert breaker.allow() and breaker.state == "half_open"
    assert breaker.seconds_until_retry() == 0.0
    breaker.record_success()
    breaker.record_success()
    assert breaker.state == "half_open"
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0
    breaker.record_failure()  # one failure after closing is not enough to reopen
    assert breaker.state == "closed"


def test_a_failure_while_half_open_reopens_for_a_full_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=5, open_seconds=10, success_threshold=2, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow() and breaker.state == "half_open"
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.seconds_until_retry() == pytest.approx(10)
    clock.now += 10
    assert breaker.allow()
    assert breaker.successes == 0  # the success before reopening does not carry over


# --- backoff --------------------------------------------------------------------------------------------


def test_backoff_delays_stay_within_the_exponential_ceiling_and_are_jittered() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0, rng=random.Random(42))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for ceiling in ceilings:
        assert 0.0 <= backoff.next_delay() <= ceiling
    draws = []
    for _ in range(2000):
        backoff.reset()
        for _ in range(4):
            backoff.next_delay()
        draws.append(backoff.next_delay())  # the 5th delay: ceiling min(8, 0.5 * 16) = 8
    assert max(draws) <= 8.0
    assert max(draws) > 7.5 and min(draws) < 0.5  # full jitter spreads over the whole [0, ceiling]
    assert 3.5 < sum(draws) / len(draws) < 4.5


def test_backoff_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, rng=random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    first_delays = []
    for _ in range(500):
        backoff.reset()
        first_delays.append(backoff.next_delay())
    assert max(first_delays) <= 1.0 < 60.0


# --- emit -----------------------------------------------------------------------------------------------


def test_emit_spools_counts_samples_and_applies_topic_overrides(tmp_path: Path, agents: list[Agent]) -> None:
    agent = make_agent(tmp_path, {"cell": lambda emit, stop: None},
                       topic_overrides={"dyno.samples": "site7.dyno.samples"})
    agents.append(agent)
    emit = agent.emit_for("cell")
    emit([("dyno.samples", "s1", dyno_record("b1", [1.0, 2.0, 3.0])),
          ("dyno.samples", "s1", dyno_record("b2", [4.0], channel="afr"))])
    emit([("dyno.samples", "s1", dyno_record("b3", [5.0, 6.0]))])
    assert agent.spool.stats.spooled_records == 3
    assert agent.spool.stats.spooled_samples == 6
    assert agent.health["cell"].received_samples == 6
    assert agent.health["cell"].last_sample_at > 0
    assert agent.metrics.registry.get_sample_value("fleetstream_agent_received_samples_total", {"source": "cell"}) == 6
    publish = RecordingPublish()
    assert agent.spool.drain_once(publish) == 3
    assert [e.topic for e in publish.entries] == ["site7.dyno.samples"] * 3
    assert [e.key for e in publish.entries] == [b"s1"] * 3
    assert [e.source for e in publish.entries] == ["cell"] * 3
    decoded = [decode(e.value, "dyno_sample_batch") for e in publish.entries]
    assert [d["batch_id"] for d in decoded] == ["b1", "b2", "b3"]
    assert [s["value"] for d in decoded for s in d["samples"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_a_batch_the_budget_refuses_is_counted_as_dropped_not_received(tmp_path: Path, agents: list[Agent]) -> None:
    agent = make_agent(tmp_path, {"cell": lambda emit, stop: None}, spool_budget_mb=0)
    agents.append(agent)
    agent.emit_for("cell")([("dyno.samples", "s1", dyno_record("b1", [1.0, 2.0]))])
    assert agent.health["cell"].received_samples == 0
    assert agent.spool.stats.dropped_samples == {"normal:budget": 2}
    assert agent.status()["spool"]["dropped_samples"] == {"normal:budget": 2}


def test_emit_refuses_a_topic_without_a_record_type(tmp_path: Path, agents: list[Agent]) -> None:
    agent = make_agent(tmp_path, {"cell": lambda emit, stop: None})
    agents.append(agent)
    with pytest.raises(KeyError, match="no record type"):
        agent.emit_for("cell")([("no.such.topic", "k", {})])
    assert agent.spool.stats.spooled_records == 0


# --- supervisor -----------------------------------------------------------------------------------------


def test_supervisor_reconnects_with_backoff_and_shows_the_circuit_in_health(tmp_path: Path,
                                                                            agents: list[Agent]) -> None:
    observed: list[tuple[float, str, str, int]] = []  # (time, breaker state, health state, failures so far)
    delivered = threading.Event()
    holder: list[Agent] = []

    def flaky(emit: Emit, stop: threading.Event) -> None:
        agent = holder[0]
        observed.append((time.monotonic(), agent.breakers["dyno"].state, agent.health["dyno"].state,
                         agent.health["dyno"].failures))
        if len(observed) <= 3:
            raise ConnectionError(f"dyno PC unreachable (attempt {len(observed)})")
        emit([("dyno.samples", "s1", dyno_record("a", [1.0]))])
        emit([("dyno.samples", "s1", dyno_record("b", [2.0]))])
        delivered.set()
        stop.wait()

    agent = make_agent(tmp_path, {"dyno": flaky}, failure_threshold=2, open_seconds=0.4, success_threshold=2,
                       reconnect_base_s=0.01, reconnect_cap_s=0.02)
    holder.append(agent)
    agents.append(agent)
    publish = RecordingPublish()
    agent.producer.publish_acknowledged = publish  # type: ignore[method-assign]
    circuit_states: list[str] = []
    agent.start()
    deadline = time.monotonic() + 10
    while not delivered.is_set() and time.monotonic() < deadline:
        circuit_states.append(str(agent.status()["sources"][0]["state"]))
        time.sleep(0.01)
    assert delivered.is_set()

    assert [(b, f) for _, b, _, f in observed] == [("closed", 0), ("closed", 1), ("half_open", 2), ("half_open", 3)]
    assert all(h == "running" for _, _, h, _ in observed)
    assert observed[1][0] - observed[0][0] < 0.3  # backoff only, no circuit wait
    assert observed[2][0] - observed[1][0] >= 0.39  # opened after the 2nd failure: waited the open timeout
    assert observed[3][0] - observed[2][0] >= 0.39  # the half-open failure reopened it for another full timeout
    assert "circuit_open" in circuit_states
    health = agent.status()["sources"][0]
    assert health["circuit"] == "closed"  # two delivered batches closed the half-open breaker
    assert health["state"] == "running" and health["connected"] is True
    assert health["failures"] == 3 and "attempt 3" in health["last_error"]
    assert agent.metrics.registry.get_sample_value("fleetstream_agent_circuit_open", {"source": "dyno"}) == 0
    assert agent.drain(5.0)
    assert [decode(e.value, "dyno_sample_batch")["batch_id"] for e in publish.entries] == ["a", "b"]


def test_a_source_that_returns_is_finished_and_not_restarted(tmp_path: Path, agents: list[Agent]) -> None:
    calls: list[int] = []

    def once(emit: Emit, stop: threading.Event) -> None:
        calls.append(1)
        emit([("dyno.samples", "s1", dyno_record("only", [7.0]))])

    agent = make_agent(tmp_path, {"file": once})
    agents.append(agent)
    agent.producer.publish_acknowledged = RecordingPublish()  # type: ignore[method-assign]
    agent.start()
    wait_until(lambda: agent.health["file"].state == "finished")
    time.sleep(0.2)
    assert calls == [1]
    assert agent.status()["sources"][0]["connected"] is False


def test_drain_loop_survives_a_publish_that_raises_and_delivers_in_order(tmp_path: Path,
                                                                         agents: list[Agent]) -> None:
    agent = make_agent(tmp_path, {"cell": lambda emit, stop: None})
    agents.append(agent)
    emit = agent.emit_for("cell")
    for i in range(5):
        emit([("dyno.samples", "s1", dyno_record(f"b{i}", [float(i)]))])
    publish = RecordingPublish(raise_times=2)
    agent.producer.publish_acknowledged = publish  # type: ignore[method-assign]
    agent.start()
    assert agent.drain(10.0)
    assert [decode(e.value, "dyno_sample_batch")["batch_id"] for e in publish.entries] == [f"b{i}" for i in range(5)]
    assert agent.status()["spool"]["failed_publishes"] == 2
    assert agent.status()["spool"]["published_samples"] == 5


# --- status ---------------------------------------------------------------------------------------------


def test_read_status_reports_a_live_agent_as_running(tmp_path: Path, agents: list[Agent]) -> None:
    agent = make_agent(tmp_path, {"cell": lambda emit, stop: None}, station_id="cell-9")
    agents.append(agent)
    agent.emit_for("cell")([("dyno.samples", "s1", dyno_record("b1", [1.0, 2.0]))])
    agent.write_status()
    status = read_status(tmp_path / "spool")
    assert status["running"] is True
    assert status["station_id"] == "cell-9" and status["pid"] == os.getpid()
    assert status["spool"]["spooled_samples"] == 2 and status["spool"]["pending_bytes"] > 0
    assert [s["name"] for s in status["sources"]] == ["cell"]


def test_read_status_of_a_dead_or_silent_agent_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no agent status"):
        read_status(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / "status.json").write_text(json.dumps({"pid": int(dead.stdout), "updated_at": time.time()}))
    assert read_status(tmp_path)["running"] is False
    (tmp_path / "status.json").write_text(json.dumps({"pid": os.getpid(), "updated_at": time.time() - 60}))
    assert read_status(tmp_path)["running"] is False  # alive but has not written status for a minute


# --- counter source -------------------------------------------------------------------------------------


def test_counter_batches_are_numbered_split_by_channel_and_stable() -> None:
    stream = CounterStream("s1", rate_hz=100, batch_interval_s=0.1, channels=3, epoch_ms=1_000)
    records = stream.batch(2)
    assert [r["channel"] for r in records] == ["counter_0", "counter_1", "counter_2"]
    assert [r["batch_id"] for r in records] == ["counter:s1:1000:0:2", "counter:s1:1000:1:2", "counter:s1:1000:2:2"]
    values = sorted(s["value"] for r in records for s in r["samples"])
    assert values == [float(i) for i in range(20, 30)]
    assert {s["timestamp_ms"] for s in records[0]["samples"]} == {1_000 + i * 10 for i in (21, 24, 27)}
    assert stream.batch(2) == records
    later_run = CounterStream("s1", rate_hz=100, batch_interval_s=0.1, channels=3, epoch_ms=2_000).batch(2)
    assert not {r["batch_id"] for r in later_run} & {r["batch_id"] for r in records}  # other samples, other ids


def test_counter_source_records_acknowledged_index_and_resumes_after_it(tmp_path: Path) -> None:
    state = tmp_path / "counter.json"
    spec = SourceSpec(name="n", type="counter", options={"rate_hz": 1000, "batch_interval_s": 0.01, "count": 50,
                                                           "state_file": str(state), "epoch_ms": 5})
    got: list[Sequence[tuple[str, str, dict[str, Any]]]] = []
    acked_after_emit: list[int] = []

    def emit(records: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        acked_after_emit.append(json.loads(state.read_text())["acked"] if state.exists() else -1)
        got.append(records)

    build_source(spec, "s1")(emit, threading.Event())  # returns after `count` samples
    assert len(got) == 5
    assert acked_after_emit == [-1, 9, 19, 29, 39]  # the state file moves only after emit returned
    assert json.loads(state.read_text()) == {"acked": 49, "epoch_ms": 5}

    state.write_text(json.dumps({"acked": 29, "epoch_ms": 5}))  # as if the process died after batch 2
    spec.options["count"] = 60
    resumed: list[Sequence[tuple[str, str, dict[str, Any]]]] = []
    build_source(spec, "s1")(resumed.append, threading.Event())
    assert resumed[:2] == got[3:]  # batches 3 and 4 again, byte for byte the same records
    assert [batch[0][2]["batch_id"] for batch in resumed] == [f"counter:s1:5:0:{k}" for k in (3, 4, 5)]
