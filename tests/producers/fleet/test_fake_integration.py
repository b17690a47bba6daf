"""End to end over real HTTP on 127.0.0.1: the pollers against the fake Motive and Samsara APIs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetstream.producers.fleet.checkpoint import CheckpointStore
from fleetstream.producers.fleet.errors import AuthError
from fleetstream.producers.fleet.fake_providers import FakeController, start_fake
from fleetstream.producers.fleet.motive import MotiveClient, motive_settings
from fleetstream.producers.fleet.poller import FleetPoller, Publication, start_pollers
from fleetstream.producers.fleet.samsara import SamsaraClient, samsara_settings
from fleetstream.schemas.codec import decode, encode

NOW = datetime(2026, 3, 2, 12, 0, 7, tzinfo=UTC)
SINCE = NOW - timedelta(hours=2)
FAST = {"rate_per_s": 500.0, "burst": 100, "backoff_base_s": 0.005, "backoff_cap_s": 0.02, "max_retries": 8}


def provider_client(provider: str, url: str, token: str = "fake-token", **overrides: Any) -> Any:
    options = {**FAST, **overrides}
    if provider == "motive":
        return MotiveClient(token, motive_settings(url, **options))
    return SamsaraClient(token, samsara_settings(url, **options))


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeController]]:
    controllers = {}
    for seed, provider in enumerate(("motive", "samsara")):
        _, controllers[provider] = start_fake(provider, vehicles=4, seed=seed, now=NOW, page_size=2,
                                              late_fraction=0.15, late_by_s=240)
    yield controllers
    for controller in controllers.values():
        controller.stop()


class Sink:
    """A thread-safe publisher that also proves every record encodes with its Avro schema."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[Publication] = []

    def __call__(self, batch: list[Publication]) -> None:
        for topic, _, record in batch:
            kind = "fleet_location_batch" if topic == "fleet.locations" else "fleet_fault_batch"
            assert decode(encode(kind, record), kind) == record
        with self.lock:
            self.records.extend(batch)

    def points(self, provider: str) -> list[tuple[str, int]]:
        with self.lock:
            return [(r["provider_vehicle_id"], loc["timestamp_ms"]) for topic, _, r in self.records
                    if topic == "fleet.locations" and r["provider"] == provider for loc in r["locations"]]

    def faults(self, provider: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [(r["provider_vehicle_id"], f["fault_id"], f["status"], f["last_observed_ms"])
                    for topic, _, r in self.records if topic == "fleet.faults" and r["provider"] == provider
                    for f in r["faults"]]


def poller(provider: str, controller: FakeController, sink: Sink, state: Path, **client_options: Any) -> FleetPoller:
    return FleetPoller(provider_client(provider, controller.url, **client_options), CheckpointStore(state), sink,
                       lookback=timedelta(minutes=15), interval=timedelta(seconds=0.05), since=SINCE,
                       clock=controller.now)


@pytest.mark.parametrize("provider", ["motive", "samsara"])
def test_incremental_polls_publish_the_ground_truth_exactly_once(
        provider: str, fakes: dict[str, FakeController], tmp_path: Path) -> None:
    controller, sink = fakes[provider], Sink()
    fleet_poller = poller(provider, controller, sink, tmp_path)
    fleet_poller.poll_once(controller.now())
    controller.advance(7 * 60)
    fleet_poller.poll_once(controller.now())
    controller.advance(7 * 60)
    fleet_poller.poll_once(controller.now())
    points = sink.points(provider)
    assert len(points) == len(set(points))
    assert set(points) == controller.ground_truth(SINCE, controller.now())
    assert len(sink.faults(provider)) == len(set(sink.faults(provider))) > 0
    assert fleet_poller.stats.duplicates_dropped > 0  # the lookback did refetch, and dedup caught it


def test_a_provider_down_does_not_hold_up_the_other_and_catches_up(
        fakes: dict[str, FakeController], tmp_path: Path) -> None:
    sink, stop = Sink(), threading.Event()
    motive = poller("motive", fakes["motive"], sink, tmp_path, max_retries=1)
    samsara = poller("samsara", fakes["samsara"], sink, tmp_path, max_retries=1)
    threads = start_pollers([motive, samsara], stop)
    try:
        wait_for(lambda: samsara.stats.polls >= 1 and motive.stats.polls >= 1)
        fakes["samsara"].set_down(True)
        samsara_before = len(sink.points("samsara"))
        for _ in range(3):  # time passes for both fleets; only Motive's API answers
            for controller in fakes.values():
                controller.advance(5 * 60)
            polls = motive.stats.polls
            wait_for(lambda polls=polls: motive.stats.polls >= polls + 2)
        assert set(sink.points("motive")) == fakes["motive"].ground_truth(SINCE, fakes["motive"].now())
        assert samsara.stats.consecutive_failures >= 1
        assert len(sink.points("samsara")) == samsara_before
        fakes["samsara"].set_down(False)
        truth = fakes["samsara"].ground_truth(SINCE, fakes["samsara"].now())
        wait_for(lambda: set(sink.points("samsara")) == truth)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    for provider in ("motive", "samsara"):
        points = sink.points(provider)
        assert len(points) == len(set(points))


def wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    """Polls until `condition` holds; the timeout catches a hang, not slowness (a loaded CI machine is slow)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.parametrize("provider", ["motive", "samsara"])
def test_rate_limits_and_flaky_5xx_are_ridden_out(provider: str, tmp_path: Path) -> None:
    _, controller = start_fake(provider, vehicles=3, seed=5, now=NOW, page_size=2, rate_per_s=4.0, burst=2,
                               error_rate=0.3)
    try:
        sink = Sink()
        poller(provider, controller, sink, tmp_path, rate_per_s=1000.0, burst=1000).poll_once(NOW)
        assert set(sink.points(provider)) == controller.ground_truth(SINCE, NOW)
        assert controller.statuses[429] > 0 and controller.statuses[502] > 0
    finally:
        controller.stop()


@pytest.mark.parametrize(("provider", "message"), [("motive", "invalid API key"), ("samsara", "Unauthorized")])
def test_a_wrong_token_gets_the_documented_401(provider: str, message: str, fakes: dict[str, FakeController]) -> None:
    client = provider_client(provider, fakes[provider].url, token="wrong")
    with pytest.raises(AuthError, match=message):
        client.latest_locations()


@pytest.mark.parametrize("provider", ["motive", "samsara"])
def test_latest_locations_give_one_recent_point_per_vehicle(provider: str, fakes: dict[str, FakeController]) -> None:
    latest = provider_client(provider, fakes[provider].url).latest_locations()
    assert len({point.provider_vehicle_id for point in latest}) == len(latest) >= 3
    assert all(0 <= fakes[provider].now_ms() - point.timestamp_ms < 30 * 60_000 for point in latest)
