"""The analytics stage survives SIGKILL: a worker killed mid-stream and restarted loses nothing, counts nothing twice.

The stream of test_worker_correctness (out-of-order, late and re-sent batches) is produced at a steady pace while
the worker runs. After some windows have closed, and with others open, the worker is SIGKILLed; the producer
keeps going (a backlog builds up while no worker runs), then a new worker process starts, recovers the
analytics tables from their changelogs and catches up. The final window aggregates must equal the
independent computation exactly.

At-least-once allows one kind of repeat: output sent before the crash whose state or offset commit was not yet
durable is produced again by the replay, from the same state and the same input, so with identical content.
Such repeats are tolerated only when identical, and deduplicated by (key, channel, kind, start) for windows
(by source partition and offset for dead letters), which is what the idempotent sinks do. A window emitted
twice with different content, a missing window, or a sample counted twice is a failure.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from fleetstream.demo import Services
from tests.streams.test_worker_correctness import (
    Outputs,
    WindowId,
    assert_late_letters,
    assert_windows_match,
    expected_episodes,
    expected_health,
    expected_windows,
    generate,
    produce,
    track_distance_mi,
    wait_for_worker,
    worker_env,
    worker_settings,
)

SECONDS = 40
PACE_S = 0.25  # wall seconds per second of generated data: a live stream, not one burst


def identical_once(records: list[dict[str, Any]], ident: Any,
                   ignore: tuple[str, ...] = ()) -> dict[Any, dict[str, Any]]:
    """One record per identity; fail if two records with one identity differ (other than in `ignore`)."""
    found: dict[Any, dict[str, Any]] = {}
    for record in records:
        key = ident(record)
        content = {k: v for k, v in record.items() if k not in ignore}
        if key in found:
            assert found[key] == content, f"{key} emitted twice with different content:\n{found[key]}\n{content}"
        found[key] = content
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_worker_killed_mid_stream_resumes_from_its_changelogs(kafka_bootstrap: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    worker_env(monkeypatch, f"fleetstream-streams-restart-{run}")
    settings = worker_settings(kafka_bootstrap, tmp_path / "home")
    data = generate(run, seconds=SECONDS, seed=11)
    expected = expected_windows(data.arrivals)
    # Produced in generated order, in SECONDS chunks with a pause after each: a live stream, not one burst.
    size = math.ceil(len(data.records) / SECONDS)
    paced = [data.records[i:i + size] for i in range(0, len(data.records), size)]

    outputs = Outputs(settings, data.keys)
    worker = Services(settings)
    producer_done, killed = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    # The last quarter of the stream waits for the kill: on a loaded machine the worker can fall behind the
    # producer's pace, and the kill must still land while data flows.
    gate = len(paced) * 3 // 4

    def pace() -> None:
        try:
            for i, chunk in enumerate(paced):
                if i == gate:
                    killed.wait(180)
                produce(settings, chunk)
                time.sleep(PACE_S)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)
        finally:
            producer_done.set()

    try:
        worker.start("worker", "worker")
        wait_for_worker(settings, worker)
        producer = threading.Thread(target=pace, name="restart-test-producer", daemon=True)
        producer.start()
        # Let some windows close, then kill the worker while data still flows (windows of every channel open).
        deadline = time.monotonic() + 120
        while len(outputs.records["telemetry.windows"]) < 150 and time.monotonic() < deadline:
            worker.check()
            outputs.poll(0.2)
        before_kill = len(outputs.records["telemetry.windows"])
        assert before_kill >= 150 and not producer_done.is_set(), "the kill must land mid-stream"
        worker.processes["worker"].send_signal(signal.SIGKILL)
        worker.processes["worker"].wait(10)
        killed.set()
        producer.join(120)
        assert not errors, errors
        outputs.poll(1.0)
        worker.start("worker", "worker")  # the backlog of the rest of the stream waits for it

        def complete(out: Outputs) -> bool:
            got = {(w["key"], w["channel"], w["window_kind"], w["window_start_ms"])
                   for w in out.records["telemetry.windows"]}
            return got >= set(expected.windows)

        try:
            outputs.settle(worker, complete, timeout_s=100)
        except AssertionError:
            emitted = {(w["key"], w["channel"], w["window_kind"], w["window_start_ms"])
                       for w in outputs.records["telemetry.windows"]}
            print(f"windows never emitted (event times from {data.base_ms}):",
                  sorted(set(expected.windows) - emitted))
            raise
    finally:
        killed.set()  # a failure before the kill must not leave the producer waiting
        outputs.close()
        worker.stop(timeout_s=15)

    windows = identical_once(outputs.records["telemetry.windows"],
                             lambda w: (w["key"], w["channel"], w["window_kind"], w["window_start_ms"]))
    repeats = len(outputs.records["telemetry.windows"]) - len(windows)
    print(f"windows before the kill: {before_kill}, in all: {len(windows)}, identical repeats after it: {repeats}")
    got: dict[WindowId, dict[str, Any]] = windows
    assert_windows_match(expected, got)

    letters = identical_once(outputs.records["dlq.telemetry.signals.valid"],
                             lambda d: (d["partition"], d["offset"]), ignore=("first_seen_ms",))
    assert_late_letters(expected, list(letters.values()))
    assert outputs.records["dlq.telemetry.signals"] == []

    kpis = identical_once(outputs.records["analytics.kpi"],
                          lambda k: (k["scope_id"], k["name"], k["period_start_ms"], tuple(k["dimensions"].items())),
                          ignore=("computed_at_ms",))
    for period_start, (score, uptime) in expected_health(data.arrivals[(data.health_key, "engine_speed")],
                                                         data.base_ms).items():
        assert kpis[(data.health_key, "health_score", period_start, (("fleet_id", "7"),))]["value"] == \
            pytest.approx(score, rel=1e-9)
        assert kpis[(data.health_key, "uptime_pct", period_start, (("fleet_id", "7"),))]["value"] == \
            pytest.approx(uptime, rel=1e-9)
    distance = sum(k["value"] for (key, name, _, _), k in kpis.items() if key == data.gps_key and name == "distance_mi")
    assert math.isclose(distance, track_distance_mi(data.gps_track), rel_tol=1e-9)

    alerts = identical_once(outputs.records["analytics.threshold.exceeded"], lambda a: (a["alert_id"], a["event"]))
    assert sorted((a["alert_id"], a["event"], a["started_ms"], a["ended_ms"]) for a in alerts.values()) == \
        sorted(expected_episodes(data.arrivals[(data.alert_key, "coolant")], data.alert_key))
