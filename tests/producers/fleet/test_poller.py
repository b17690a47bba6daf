"""Incremental polling with a scripted source: windows, dedup, publish-then-checkpoint, atomic files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetstream.producers.fleet.checkpoint import Checkpoint, CheckpointStore
from fleetstream.producers.fleet.poller import FleetPoller, Publication, each_record
from fleetstream.producers.fleet.unify import UnifiedFault, UnifiedLocation, to_ms

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class ScriptedSource:
    """Serves fixed points (vehicle, ms) that are visible once `now_ms` reaches `visible_ms`."""

    provider = "motive"

    def __init__(self) -> None:
        self.points: list[tuple[str, int, int]] = []
        self.now_ms = 0
        self.windows: list[tuple[int, int]] = []
        self.fail = False

    def add(self, vehicle: str, when: datetime, late_s: float = 0) -> None:
        self.points.append((vehicle, to_ms(when), to_ms(when) + int(late_s * 1000)))

    def locations(self, start: datetime, end: datetime) -> list[UnifiedLocation]:
        if self.fail:
            raise ConnectionError("provider down")
        self.windows.append((to_ms(start), to_ms(end)))
        return [UnifiedLocation("motive", vehicle, None, None, ms, 1.0, 2.0) for vehicle, ms, visible in self.points
                if to_ms(start) <= ms < to_ms(end) and visible <= self.now_ms]

    def faults(self, start: datetime, end: datetime) -> list[UnifiedFault]:
        return []

    def close(self) -> None:
        pass


def published_points(log: list[Publication]) -> list[tuple[str, int]]:
    return [(record["provider_vehicle_id"], loc["timestamp_ms"]) for _, _, record in log for loc in record["locations"]]


def make(tmp_path: Path, source: ScriptedSource, log: list[Publication], **kwargs) -> FleetPoller:
    return FleetPoller(source, CheckpointStore(tmp_path), log.extend, lookback=timedelta(minutes=15),
                       since=T0, endpoints=["locations"], **kwargs)


def poll(poller: FleetPoller, source: ScriptedSource, now: datetime) -> int:
    source.now_ms = to_ms(now)
    return poller.poll_once(now)


def test_lookback_catches_late_points_without_republishing_others(tmp_path: Path) -> None:
    source, log = ScriptedSource(), list[Publication]()
    poller = make(tmp_path, source, log)
    source.add("v1", T0 + timedelta(minutes=1))
    source.add("v1", T0 + timedelta(minutes=2), late_s=300)  # arrives 5 minutes late
    source.add("v2", T0 + timedelta(minutes=3))
    assert poll(poller, source, T0 + timedelta(minutes=4)) == 2
    assert poll(poller, source, T0 + timedelta(minutes=10)) == 1
    assert poll(poller, source, T0 + timedelta(minutes=11)) == 0
    assert sorted(published_points(log)) == sorted((v, ms) for v, ms, _ in source.points)
    assert source.windows[1] == (to_ms(T0), to_ms(T0 + timedelta(minutes=10)))  # a lookback back, not before `since`
    assert poller.stats.duplicates_dropped == 5


def test_batches_are_keyed_per_vehicle_on_the_locations_topic(tmp_path: Path) -> None:
    source, log = ScriptedSource(), list[Publication]()
    source.add("v1", T0 + timedelta(seconds=1))
    source.add("v1", T0 + timedelta(seconds=31))
    source.add("v2", T0 + timedelta(seconds=2))
    poll(make(tmp_path, source, log), source, T0 + timedelta(minutes=1))
    assert [(topic, key, len(record["locations"])) for topic, key, record in log] == [
        ("fleet.locations", b"motive:v1", 2), ("fleet.locations", b"motive:v2", 1)]


def test_checkpoint_moves_only_after_publish_returned(tmp_path: Path) -> None:
    source, log = ScriptedSource(), list[Publication]()
    source.add("v1", T0 + timedelta(minutes=1))

    def failing_publish(batch: list[Publication]) -> None:
        raise OSError("spool full")

    poller = FleetPoller(source, CheckpointStore(tmp_path), failing_publish, since=T0, endpoints=["locations"])
    with pytest.raises(OSError):
        poll(poller, source, T0 + timedelta(minutes=2))
    assert CheckpointStore(tmp_path).load("motive", "locations") is None
    assert poller.stats.consecutive_failures == 1
    poller.publish = log.extend
    assert poll(poller, source, T0 + timedelta(minutes=3)) == 1
    assert published_points(log) == [("v1", to_ms(T0 + timedelta(minutes=1)))]


def test_a_restarted_poller_resumes_from_disk_without_duplicates(tmp_path: Path) -> None:
    source, log = ScriptedSource(), list[Publication]()
    for minute in range(0, 30, 2):
        source.add("v1", T0 + timedelta(minutes=minute))
    poll(make(tmp_path, source, log), source, T0 + timedelta(minutes=20))
    restarted = make(tmp_path, source, log)  # a new process: state only from the checkpoint file
    poll(restarted, source, T0 + timedelta(minutes=40))
    points = published_points(log)
    assert len(points) == len(set(points)) == 15


def test_source_failure_keeps_the_checkpoint_and_the_next_poll_catches_up(tmp_path: Path) -> None:
    source, log = ScriptedSource(), list[Publication]()
    poller = make(tmp_path, source, log, max_window=timedelta(minutes=10))
    for minute in range(60):
        source.add("v1", T0 + timedelta(minutes=minute, seconds=30))
    poll(poller, source, T0 + timedelta(minutes=5))
    source.fail = True
    with pytest.raises(ConnectionError):
        poll(poller, source, T0 + timedelta(minutes=30))
    source.fail = False
    source.windows.clear()
    poll(poller, source, T0 + timedelta(minutes=61))
    assert sorted(published_points(log)) == sorted((v, ms) for v, ms, _ in source.points)
    assert all(end - start <= 10 * 60_000 for start, end in source.windows)  # caught up in bounded chunks


def test_dedup_memory_is_bounded_by_the_lookback(tmp_path: Path) -> None:
    source, log = ScriptedSource(), list[Publication]()
    poller = make(tmp_path, source, log)
    for minute in range(120):
        source.add("v1", T0 + timedelta(minutes=minute))
    for minute in range(5, 125, 5):
        poll(poller, source, T0 + timedelta(minutes=minute))
    saved = CheckpointStore(tmp_path).load("motive", "locations")
    assert saved is not None and len(saved.seen) <= 16


def test_each_record_adapter_calls_the_single_record_publisher() -> None:
    calls = []
    each_record(lambda topic, key, record: calls.append((topic, key)))([("t", b"k1", {}), ("t", b"k2", {})])
    assert calls == [("t", b"k1"), ("t", b"k2")]


def test_unknown_endpoints_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fleet endpoints"):
        FleetPoller(ScriptedSource(), CheckpointStore(tmp_path), list.append, endpoints=["trips"])  # type: ignore[arg-type]


def test_checkpoint_files_round_trip_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    store.save("samsara", "faults", Checkpoint(high_water_ms=1_700_000_000_000, seen={"a|1": 1}))
    store.save("samsara", "faults", Checkpoint(high_water_ms=1_700_000_060_000, seen={"b|2": 2}))
    assert store.load("samsara", "faults") == Checkpoint(1_700_000_060_000, {"b|2": 2})
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["samsara.faults.json"]
    assert json.loads((tmp_path / "state" / "samsara.faults.json").read_text())["high_water"].startswith("2023-11")


def test_a_corrupt_checkpoint_is_an_error_not_a_silent_reset(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path("motive", "locations").write_text('{"version": 1, "high_wat')
    with pytest.raises(ValueError, match=r"motive\.locations\.json is unreadable"):
        store.load("motive", "locations")
