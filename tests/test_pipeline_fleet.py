"""Issue 4's proof for the fleet APIs: the Motive and Samsara pollers, built with `build_poller` against the
local fakes and publishing through an EdgeProducer publish + flush wrapper (as `fleetstream poll` does), go
through the real broker, `fleetstream worker` and `fleetstream sink clickhouse`; ClickHouse's fleet_locations
and fleet_faults then hold exactly the fakes' ground truth for the polled window: no gaps, no duplicates.
Also when Samsara's API is down for several poll cycles while Motive keeps flowing.

Isolation on the shared broker: the fakes' vehicle ids are fixed, so each test uses its own random fleet seed
(its own timestamps, hence its own batch ids) and reads back only the rows of the batches it published.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import FleetSettings, KafkaSettings
from fleetstream.producers.edge import EdgeProducer
from fleetstream.producers.fleet import CheckpointStore, FleetPoller, Publication, build_poller, start_pollers
from fleetstream.producers.fleet.fake_providers import FakeController, start_fake
from tests.pipeline import Pipeline, Row, pipeline  # noqa: F401  (pipeline is a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROVIDERS = ("motive", "samsara")
TOKEN = "fake-token"
MPH_PER_KMH = 0.621371


def _ms(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


class Publisher:
    """`fleetstream poll`'s publish callable: produce every record, flush, fail unless all were acknowledged.

    It also notes the batch ids it got acknowledged, so a test reads back exactly its own rows."""

    def __init__(self, kafka: KafkaSettings):
        self.producer = EdgeProducer(kafka)
        self.batch_ids: dict[str, set[str]] = {"fleet.locations": set(), "fleet.faults": set()}
        self._lock = threading.Lock()

    def __call__(self, batch: list[Publication]) -> None:
        with self._lock:  # one producer shared by both pollers' threads
            for topic, key, record in batch:
                self.producer.publish(topic, key.decode(), record)
            self.producer.confirm()
            for topic, _, record in batch:
                self.batch_ids[topic].add(record["batch_id"])


def _poller(provider: str, url: str, home: Path, publish: Publisher, since: datetime, **fleet: Any) -> FleetPoller:
    return build_poller(provider, FleetSettings(**fleet), TOKEN, home / "checkpoints", publish, since=since,
                        base_url=url, rate_per_s=200.0, burst=200, backoff_base_s=0.02, backoff_cap_s=0.2,
                        max_retries=1)


def _location_rows(pipeline: Pipeline, provider: str, batch_ids: set[str], expected: int,  # noqa: F811
                   timeout_s: float = 60.0) -> list[Row]:
    return pipeline.wait_for_rows(
        "SELECT provider_vehicle_id, toUnixTimestamp64Milli(ts) AS ts_ms, vin, fleet_number, latitude, longitude,"
        " speed_mph, heading_degrees, engine_state, driver_id, odometer_miles FROM fleetstream.fleet_locations"
        " WHERE provider = {p:String} AND has({ids:Array(String)}, batch_id)",
        {"p": provider, "ids": sorted(batch_ids)}, expected, timeout_s)


def _keys(rows: list[Row]) -> Counter[tuple[str, int]]:
    return Counter((str(row["provider_vehicle_id"]), int(row["ts_ms"])) for row in rows)


def _assert_exact(rows: list[Row], truth: set[tuple[str, int]], provider: str) -> None:
    keys = _keys(rows)
    duplicates = {key: n for key, n in keys.items() if n > 1}
    assert not duplicates, f"{provider}: {len(duplicates)} locations stored more than once: {list(duplicates)[:5]}"
    missing, extra = truth - set(keys), set(keys) - truth
    assert not missing and not extra, (f"{provider}: {len(missing)} ground-truth points missing "
                                       f"{sorted(missing)[:5]}, {len(extra)} unexpected {sorted(extra)[:5]}")


def _assert_location_fields(rows: list[Row], fake: FakeController) -> None:
    """Each stored location carries the fake's position, heading, speed, engine state, vehicle and driver."""
    fleet = fake.fleet
    for row in rows:
        vehicle = fleet.by_id[str(row["provider_vehicle_id"])]
        ts_ms = int(row["ts_ms"])
        point = next(fleet.points(vehicle, ts_ms, ts_ms + 1, ts_ms))
        assert (row["latitude"], row["longitude"], row["heading_degrees"]) == (
            point.latitude, point.longitude, point.heading_degrees), row
        assert row["speed_mph"] == pytest.approx(point.speed_mph, abs=0.01), row
        assert row["engine_state"] == point.engine_state, row
        assert row["driver_id"] == point.driver.id, row
        assert row["vin"] == vehicle.vin, row
        assert row["fleet_number"] == vehicle.name, row
        if fake.provider == "motive":  # Samsara's odometer is the nearest 5-minute reading, not the point's
            assert row["odometer_miles"] == pytest.approx(point.odometer_miles, abs=0.01), row


# --- faults: the fakes' episodes as each poll saw them --------------------------------------------------------


def _motive_fault_truth(fake: FakeController, since_ms: int, polls_ms: list[int]) -> set[tuple[Any, ...]]:
    """(vehicle, fault id, status, first ms, last ms) of every state of every episode a poll saw.

    /v1/fault_codes lists every episode begun by now; an open one's last observation is now's minute, a
    closed one's its end. The poller publishes each state whose observation falls in its window once."""
    truth = set()
    for now_ms in polls_ms:
        for vehicle in fake.fleet.vehicles:
            for block, start_ms, end_ms in fake.fleet.fault_episodes(vehicle, now_ms):
                closed = end_ms <= now_ms
                last_ms = end_ms if closed else now_ms - now_ms % 60000
                if last_ms >= since_ms:
                    truth.add((vehicle.id, str(int(vehicle.id) * 1000 + block % 1000), "closed" if closed else "open",
                               start_ms // 1000 * 1000, last_ms))
    return truth


def _samsara_fault_truth(fake: FakeController, since_ms: int, polls_ms: list[int]) -> set[tuple[Any, ...]]:
    """(vehicle, first ms, status, last ms) of every state of every episode a poll saw.

    Samsara sends a faultCodes snapshot every 5 minutes while a code is active and an empty one when it
    clears; an episode runs from its first to its last snapshot in the polled window."""
    snapshot_ms = 300_000
    truth = set()
    for now_ms in polls_ms:
        for vehicle in fake.fleet.vehicles:
            for _, start_ms, end_ms in fake.fleet.fault_episodes(vehicle, now_ms):
                first_ms = -(-max(start_ms, since_ms) // snapshot_ms) * snapshot_ms
                if first_ms >= end_ms or first_ms > now_ms:
                    continue
                closed = end_ms <= now_ms
                last_ms = end_ms - snapshot_ms if closed else now_ms // snapshot_ms * snapshot_ms
                truth.add((vehicle.id, first_ms, "closed" if closed else "open", last_ms))
    return truth


def _fault_rows(pipeline: Pipeline, provider: str, batch_ids: set[str], expected: int) -> list[Row]:  # noqa: F811
    return pipeline.wait_for_rows(
        "SELECT provider_vehicle_id, fault_id, code, status, toUnixTimestamp64Milli(first_observed) AS first_ms,"
        " toUnixTimestamp64Milli(last_observed) AS last_ms, vin FROM fleetstream.fleet_faults"
        " WHERE provider = {p:String} AND has({ids:Array(String)}, batch_id)",
        {"p": provider, "ids": sorted(batch_ids)}, expected)


# --- the tests -------------------------------------------------------------------------------------------------


def test_both_providers_land_in_clickhouse_exactly(pipeline: Pipeline, tmp_path: Path) -> None:  # noqa: F811
    """Three poll cycles of each provider on frozen fake clocks, 40 simulated minutes apart."""
    wall = datetime.now(UTC)
    origin = (wall - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
    since = origin + timedelta(hours=1)
    polls = [origin + timedelta(hours=2, seconds=17) + timedelta(minutes=40) * i for i in range(3)]
    seed = random.SystemRandom().randrange(1, 1_000_000)
    publisher = Publisher(pipeline.settings.kafka)
    fakes = {provider: start_fake(provider, vehicles=4, seed=seed, origin=origin, now=polls[0])
             for provider in PROVIDERS}
    try:
        pollers = {provider: _poller(provider, url, tmp_path / provider, publisher, since)
                   for provider, (url, _) in fakes.items()}
        for when in polls:
            for provider, poller in pollers.items():
                fakes[provider][1].set_now(when)
                poller.poll_once(when)
        for provider, (_, fake) in fakes.items():
            truth = fake.ground_truth(since, polls[-1])
            assert truth, "the fake fleet must have driven in the window"
            rows = _location_rows(pipeline, provider, publisher.batch_ids["fleet.locations"], len(truth))
            _assert_exact(rows, truth, provider)
            _assert_location_fields(rows, fake)

        polls_ms, since_ms = [_ms(when) for when in polls], _ms(since)
        motive_truth = _motive_fault_truth(fakes["motive"][1], since_ms, polls_ms)
        rows = _fault_rows(pipeline, "motive", publisher.batch_ids["fleet.faults"], len(motive_truth))
        stored: Counter[tuple[Any, ...]] = Counter(
            (r["provider_vehicle_id"], r["fault_id"], r["status"], r["first_ms"], r["last_ms"]) for r in rows)
        assert motive_truth and set(stored) == motive_truth and max(stored.values()) == 1, stored
        assert {r["code"] for r in rows} <= {"P0087", "3031"}

        samsara_truth = _samsara_fault_truth(fakes["samsara"][1], since_ms, polls_ms)
        rows = _fault_rows(pipeline, "samsara", publisher.batch_ids["fleet.faults"], len(samsara_truth))
        stored = Counter((r["provider_vehicle_id"], r["first_ms"], r["status"], r["last_ms"]) for r in rows)
        assert samsara_truth and set(stored) == samsara_truth and max(stored.values()) == 1, stored
        assert {r["code"] for r in rows} <= {"P0087", "SPN 3031 FMI 9"}
        assert all(str(r["fault_id"]).endswith(f"@{r['first_ms']}") for r in rows)
    finally:
        for _, fake in fakes.values():
            fake.stop()


def _motive_after(pipeline: Pipeline, batch_ids: set[str], after_ms: int) -> int:  # noqa: F811
    rows = pipeline.rows(
        "SELECT count() AS n FROM fleetstream.fleet_locations WHERE provider = 'motive'"
        " AND has({ids:Array(String)}, batch_id) AND toUnixTimestamp64Milli(ts) >= {after:Int64}",
        {"ids": sorted(batch_ids), "after": after_ms})
    return int(rows[0]["n"])


def test_samsara_outage_does_not_block_motive_and_catches_up(pipeline: Pipeline, tmp_path: Path) -> None:  # noqa: F811
    """Both pollers run in their own threads on the wall clock (a point every 2 s per vehicle). Samsara's
    API answers 503 for several poll cycles; Motive's rows keep arriving; then Samsara catches up from its
    checkpoint, and both providers' rows equal the ground truth of everything polled."""
    wall = datetime.now(UTC).replace(microsecond=0)
    since = wall - timedelta(minutes=3)
    seed = random.SystemRandom().randrange(1, 1_000_000)
    publisher = Publisher(pipeline.settings.kafka)
    fakes = {provider: start_fake(provider, vehicles=3, seed=seed, origin=wall - timedelta(hours=1), period_s=2.0)
             for provider in PROVIDERS}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        pollers = {provider: _poller(provider, url, tmp_path, publisher, since, lookback_s=60.0, interval_s=1.0)
                   for provider, (url, _) in fakes.items()}
        threads = start_pollers(list(pollers.values()), stop)
        samsara, samsara_fake = pollers["samsara"], fakes["samsara"][1]
        deadline = time.monotonic() + 30
        while samsara.stats.last_success_ms is None or pollers["motive"].stats.last_success_ms is None:
            assert time.monotonic() < deadline, "both pollers should have polled once"
            time.sleep(0.2)

        samsara_fake.set_down(True)
        down_ms = _ms(datetime.now(UTC))
        failures_before = samsara.stats.failures
        motive_during: list[int] = []
        deadline = time.monotonic() + 45
        while samsara.stats.failures - failures_before < 3 or len(set(motive_during)) < 3:
            assert time.monotonic() < deadline, (f"outage: samsara failures {samsara.stats.failures - failures_before}"
                                                 f", motive rows after the outage began {motive_during[-1:]}")
            motive_during.append(_motive_after(pipeline, publisher.batch_ids["fleet.locations"], down_ms))
            time.sleep(0.5)
        assert samsara.stats.consecutive_failures >= 3
        assert motive_during[-1] > 0 and sorted(motive_during) == motive_during, \
            "Motive's rows must keep arriving in ClickHouse while Samsara is down"
        # the outage is real: nothing of Samsara's from after it began reached ClickHouse
        stalled = pipeline.rows(
            "SELECT count() AS n FROM fleetstream.fleet_locations WHERE provider = 'samsara'"
            " AND has({ids:Array(String)}, batch_id) AND toUnixTimestamp64Milli(ts) >= {after:Int64}",
            {"ids": sorted(publisher.batch_ids["fleet.locations"]), "after": down_ms})
        assert stalled == [{"n": 0}]

        samsara_fake.set_down(False)
        up_ms = _ms(datetime.now(UTC))
        deadline = time.monotonic() + 30
        while (samsara.stats.last_success_ms or 0) <= up_ms:
            assert time.monotonic() < deadline, f"samsara did not recover: {samsara.stats.last_error}"
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for _, fake in fakes.values():
            fake.stop()

    for provider, (_, fake) in fakes.items():
        checkpoint = CheckpointStore(tmp_path / "checkpoints").load(provider, "locations")
        assert checkpoint is not None
        truth = fake.ground_truth(since, _dt(checkpoint.high_water_ms))
        assert truth, f"{provider}: the fake fleet must have driven in the window"
        rows = _location_rows(pipeline, provider, publisher.batch_ids["fleet.locations"], len(truth))
        _assert_exact(rows, truth, provider)
        if provider == "samsara":
            assert any(down_ms <= ts_ms < up_ms for _, ts_ms in _keys(rows)), "the outage's points were caught up"
