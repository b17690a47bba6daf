"""Incremental polling of one fleet provider: window, dedup, publish, then checkpoint.

Each poll fetches [high-water - lookback, now) per endpoint (locations, faults), in chunks of at most
`max_window` so a catch-up after an outage stays bounded in memory. Points already published are
dropped by their key (provider, vehicle, timestamp) — the lookback refetches them on purpose, to catch
late data — and the rest are published as one batch per vehicle. Only after `publish` returns (the
publisher is the durable spool or producer, so returning means durable) do the dedup keys and the
high-water mark move and the checkpoint get written. A failure anywhere leaves the checkpoint where it
was, and the next poll starts from there: no gap, and no duplicate because of the saved keys.

Providers are independent: one `FleetPoller` per provider, each with its own HTTP client, run in its own
thread by `start_pollers`, so an outage or a rate limit at one never delays the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from fleetstream.config import FleetSettings
from fleetstream.producers.fleet.checkpoint import Checkpoint, CheckpointStore
from fleetstream.producers.fleet.unify import UnifiedFault, UnifiedLocation, fault_batches, location_batches, to_ms

__all__ = [
    "ENDPOINTS",
    "FleetPoller",
    "FleetSource",
    "PollerStats",
    "Publication",
    "PublishBatch",
    "each_record",
    "kafka_key",
    "start_pollers",
]

log = logging.getLogger(__name__)

Publication = tuple[str, bytes, dict[str, Any]]
"""(topic, Kafka key, fleet_location_batch or fleet_fault_batch record)."""
PublishBatch = Callable[[list[Publication]], None]
ENDPOINTS = ("locations", "faults")


class FleetSource(Protocol):
    """What a provider client offers the poller (MotiveClient, SamsaraClient)."""

    provider: str

    def locations(self, start: datetime, end: datetime) -> list[UnifiedLocation]: ...

    def faults(self, start: datetime, end: datetime) -> list[UnifiedFault]: ...

    def close(self) -> None: ...


def each_record(publish_one: Callable[[str, bytes, dict[str, Any]], None]) -> PublishBatch:
    """Adapt a one-record publisher `(topic, key, record)` to the batch form the poller calls."""
    def publish(batch: list[Publication]) -> None:
        for topic, key, record in batch:
            publish_one(topic, key, record)
    return publish


def kafka_key(provider: str, vehicle_id: str) -> bytes:
    """`<provider>:<vehicle id>`: one vehicle's batches stay on one partition, in order."""
    return f"{provider}:{vehicle_id}".encode()


@dataclass
class PollerStats:
    """Counters and health of one poller (read by metrics and status commands)."""

    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    published_messages: int = 0
    published_items: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    duplicates_dropped: int = 0
    last_success_ms: int | None = None
    last_error: str | None = None


def _dedup_key(item: UnifiedLocation | UnifiedFault) -> tuple[str, int]:
    """A string key for the checkpoint and the event time that bounds how long it is kept."""
    if isinstance(item, UnifiedLocation):
        return f"{item.provider}|{item.provider_vehicle_id}|{item.timestamp_ms}", item.timestamp_ms
    return "|".join(str(part) for part in item.key), item.observed_ms


class FleetPoller:
    """Polls one provider incrementally and publishes unified batches; see the module docstring.

    `since` is where a poller without a checkpoint starts (default: `lookback` before the first poll).
    `clock` gives `now` to `run()`; tests pass a fake API's clock.
    """

    def __init__(
        self,
        source: FleetSource,
        checkpoints: CheckpointStore,
        publish: PublishBatch,
        lookback: timedelta = timedelta(minutes=15),
        interval: timedelta = timedelta(seconds=60),
        *,
        since: datetime | None = None,
        max_window: timedelta = timedelta(hours=6),
        endpoints: Sequence[str] = ENDPOINTS,
        locations_topic: str = "fleet.locations",
        faults_topic: str = "fleet.faults",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        unknown = set(endpoints) - set(ENDPOINTS)
        if unknown:
            raise ValueError(f"unknown fleet endpoints {sorted(unknown)}; known: {list(ENDPOINTS)}")
        self.source = source
        self.provider = source.provider
        self.checkpoints = checkpoints
        self.publish = publish
        self.lookback_ms = int(lookback.total_seconds() * 1000)
        self.interval = interval
        self.since = since
        self.max_window_ms = int(max_window.total_seconds() * 1000)
        self.endpoints = tuple(endpoints)
        self.topics = {"locations": locations_topic, "faults": faults_topic}
        self.clock = clock
        self.stats = PollerStats()
        self._state: dict[str, Checkpoint] = {}

    def poll_once(self, now: datetime | None = None) -> int:
        """Poll every endpoint up to `now`; return the number of new items published.

        Every endpoint is tried even if an earlier one failed; then the first failure is raised.
        """
        now = now or self.clock()
        self.stats.polls += 1
        published, errors = 0, []
        for endpoint in self.endpoints:
            try:
                published += self._poll_endpoint(endpoint, to_ms(now))
            except Exception as exc:
                errors.append(exc)
                log.warning("%s %s poll failed, checkpoint kept: %s", self.provider, endpoint, exc)
        if errors:
            self.stats.failures += 1
            self.stats.consecutive_failures += 1
            self.stats.last_error = str(errors[0])
            raise errors[0]
        self.stats.consecutive_failures = 0
        self.stats.last_success_ms = to_ms(now)
        return published

    def run(self, stop_event: threading.Event) -> None:
        """Poll every `interval` until `stop_event` is set; failures are logged and retried next cycle."""
        log.info("%s poller started (interval %s, lookback %d s)", self.provider, self.interval,
                 self.lookback_ms // 1000)
        while not stop_event.is_set():
            started_s = time.monotonic()
            try:
                self.poll_once(self.clock())
            except Exception as exc:  # keep polling: the checkpoint makes the next attempt catch up
                log.error("%s poll failed (%d in a row): %s", self.provider, self.stats.consecutive_failures, exc)
            stop_event.wait(max(0.0, self.interval.total_seconds() - (time.monotonic() - started_s)))
        self.source.close()
        log.info("%s poller stopped", self.provider)

    # ------------------------------------------------------------ one endpoint

    def _checkpoint(self, endpoint: str, now_ms: int) -> tuple[Checkpoint, int]:
        """The endpoint's checkpoint and where this poll's window starts."""
        if endpoint not in self._state:
            saved = self.checkpoints.load(self.provider, endpoint)
            if saved is None:
                start_ms = to_ms(self.since) if self.since else now_ms - self.lookback_ms
                self._state[endpoint] = Checkpoint(high_water_ms=start_ms)
                return self._state[endpoint], start_ms
            self._state[endpoint] = saved
        state = self._state[endpoint]
        floor_ms = to_ms(self.since) if self.since else 0  # never fetch before the requested start
        return state, max(floor_ms, state.high_water_ms - self.lookback_ms)

    def _poll_endpoint(self, endpoint: str, now_ms: int) -> int:
        state, cursor_ms = self._checkpoint(endpoint, now_ms)
        published = 0
        while cursor_ms < now_ms:
            chunk_end_ms = min(now_ms, cursor_ms + self.max_window_ms)
            published += self._poll_window(endpoint, state, cursor_ms, chunk_end_ms)
            cursor_ms = chunk_end_ms
        return published

    def _poll_window(self, endpoint: str, state: Checkpoint, start_ms: int, end_ms: int) -> int:
        start, end = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (start_ms, end_ms))
        items: Sequence[UnifiedLocation | UnifiedFault] = (
            self.source.locations(start, end) if endpoint == "locations" else self.source.faults(start, end))
        fresh: dict[str, tuple[int, UnifiedLocation | UnifiedFault]] = {}
        for item in items:
            key, event_ms = _dedup_key(item)
            if key not in state.seen and key not in fresh:
                fresh[key] = (event_ms, item)
        self.stats.duplicates_dropped += len(items) - len(fresh)
        new_items = [item for _, item in fresh.values()]
        if new_items:
            records = _batches(endpoint, new_items)
            topic = self.topics[endpoint]
            self.publish([(topic, kafka_key(record["provider"], record["provider_vehicle_id"]), record)
                          for record in records])
            self.stats.published_messages += len(records)
            self.stats.published_items[endpoint] += len(new_items)
        # publish returned: the items are durable, so the checkpoint may move past them
        state.seen.update({key: event_ms for key, (event_ms, _) in fresh.items()})
        state.high_water_ms = max(state.high_water_ms, end_ms)
        state.prune(state.high_water_ms - self.lookback_ms)
        self.checkpoints.save(self.provider, endpoint, state)
        return len(new_items)


def _batches(endpoint: str, items: list[UnifiedLocation | UnifiedFault]) -> list[dict[str, Any]]:
    if endpoint == "locations":
        return location_batches([item for item in items if isinstance(item, UnifiedLocation)])
    return fault_batches([item for item in items if isinstance(item, UnifiedFault)])


def start_pollers(pollers: Sequence[FleetPoller], stop_event: threading.Event) -> list[threading.Thread]:
    """Run each poller in its own thread (each has its own client), so providers never wait on each other."""
    threads = [threading.Thread(target=poller.run, args=(stop_event,), name=f"fleet-poller-{poller.provider}",
                                daemon=True) for poller in pollers]
    for thread in threads:
        thread.start()
    return threads


TOKEN_VARIABLES = {"motive": "MOTIVE_API_KEY", "samsara": "SAMSARA_API_TOKEN"}


def build_poller(provider: str, fleet: FleetSettings, token: str, checkpoint_dir: Path, publish: PublishBatch,
                 since: datetime | None = None, **http_overrides: Any) -> FleetPoller:
    """A poller for `provider` from the `fleet` settings section (the CLI, the agent and the demo use this)."""
    from fleetstream.producers.fleet.motive import MotiveClient, motive_settings
    from fleetstream.producers.fleet.samsara import SamsaraClient, samsara_settings

    overrides = {**getattr(fleet, provider), **http_overrides}
    source: FleetSource
    if provider == "motive":
        source = MotiveClient(token, motive_settings(**overrides))
    elif provider == "samsara":
        source = SamsaraClient(token, samsara_settings(**overrides))
    else:
        raise ValueError(f"unknown fleet provider {provider!r}: expected motive or samsara")
    return FleetPoller(source, CheckpointStore(checkpoint_dir), publish, lookback=timedelta(seconds=fleet.lookback_s),
                       interval=timedelta(seconds=fleet.interval_s), since=since,
                       max_window=timedelta(seconds=fleet.max_window_s))
