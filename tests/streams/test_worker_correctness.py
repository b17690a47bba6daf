"""Issue 5's proof: the real worker process on the real broker computes exactly what the data says.

Telemetry with known content (several vehicles and channels, out-of-order batches and samples, samples later
than the allowed lateness, batches re-sent verbatim) goes to the raw `telemetry.signals` / `telemetry.gps`
topics, so validation is part of the path. Everything the worker emits for this test's vehicles is read
back and compared with an independent computation written here in plain Python from the generated data:
every window aggregate (count/min/max/last exact, mean to 1e-9 relative, p95 by the documented nearest
rank), each window once, late samples dead-lettered with reason `late` and counted exactly, duplicates
counted nowhere, KPI health and uptime per period, GPS distance, and the alert episodes of a configured rule.

The worker runs with its own app id (consumer group and changelog topics), so earlier runs on the session
broker do not matter; only this test's vehicle ids are looked at.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from fleetstream.admin import wait_for_group
from fleetstream.config import KafkaSettings, Settings, load_settings
from fleetstream.demo import Services
from fleetstream.schemas import codec
from fleetstream.topics import record_type_of

TUMBLING_MS = 1_000
HOPPING_SIZE_MS, HOPPING_ADVANCE_MS = 5_000, 1_000
LATENESS_MS = 500
KPI_PERIOD_MS = 10_000
IDLE_FLUSH_S = 2.0
SPECS = (("tumbling", TUMBLING_MS, TUMBLING_MS), ("hopping", HOPPING_SIZE_MS, HOPPING_ADVANCE_MS))
RULE: dict[str, Any] = {"rule_id": "wc_coolant_hot", "channel": "coolant", "comparator": ">", "threshold": 100.0,
        "for_duration_ms": 300, "hysteresis": 5.0, "severity": "warning"}
EARTH_RADIUS_MI = 3958.7613
OUTPUT_TOPICS = ("telemetry.windows", "analytics.kpi", "analytics.threshold.exceeded",
                 "dlq.telemetry.signals.valid", "dlq.telemetry.signals", "dlq.telemetry.gps")

WindowId = tuple[str, str, str, int]  # key, channel, kind, start


# ---------------------------------------------------------------------------- generated telemetry


@dataclass
class Telemetry:
    """Records in produce order, and what each vehicle/channel received, in arrival order."""

    base_ms: int
    window_keys: list[str]
    health_key: str
    gps_key: str
    alert_key: str
    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (raw topic, key, record)
    arrivals: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    gps_track: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def keys(self) -> set[str]:
        return {*self.window_keys, self.health_key, self.gps_key, self.alert_key}

    def signal(self, key: str, channel: str, unit: str, samples: list[tuple[int, float]]) -> None:
        record = {"batch_id": uuid.uuid4().hex, "source": "test", "org_id": "1", "fleet_id": "7", "vehicle_id": key,
                  "device_id": f"dev-{key}", "name": channel, "unit": unit,
                  "samples": [{"timestamp_ms": t, "value": v, "svalue": None, "flags": 0} for t, v in samples]}
        self.send("telemetry.signals", key, record)

    def send(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.records.append((topic, key, record))
        if topic == "telemetry.signals":
            self.arrivals[(key, record["name"])] += [(s["timestamp_ms"], s["value"]) for s in record["samples"]]

    def resend(self, index: int) -> None:
        """The exact same message again (a producer retry): same batch id, same samples."""
        self.send(*self.records[index])


def generate(run: str, seconds: int, seed: int = 5) -> Telemetry:
    """`seconds` of telemetry starting one hour ago (inside validation's horizon), aligned to a KPI period."""
    rng = random.Random(seed)
    base_ms = (int(time.time() * 1000) - 3_600_000) // KPI_PERIOD_MS * KPI_PERIOD_MS
    data = Telemetry(base_ms, [f"wc-{run}-v{i}" for i in range(3)], f"wc-{run}-health", f"wc-{run}-gps",
                     f"wc-{run}-alert")
    channels = (("engine_speed", "rpm"), ("oil_temp", "degF"))
    pending_swap: dict[tuple[str, str], list[tuple[int, float]]] = {}
    lat, lon = 48.137, 11.575
    for second in range(seconds):
        start = base_ms + second * 1_000
        for key in data.window_keys:
            for channel, unit in channels:
                # 40-100 samples at irregular times (so window counts vary and every nearest rank is exercised),
                # values with ties (rounded) so p95 and min/max meet equal values
                offsets = sorted(rng.sample(range(1_000), rng.randint(40, 100)))
                samples = [(start + offset, round(rng.uniform(0, 6_000), 1 if rng.random() < 0.5 else 4))
                           for offset in offsets]
                head = samples[:30]
                rng.shuffle(head)  # out of order within the allowed lateness
                samples[:30] = head
                if rng.random() < 0.15:  # samples from 6-9 s ago: later than every window of theirs
                    samples += [(start - rng.randrange(6_000, 9_000) + 3, 1.0 + rng.random()) for _ in range(3)]
                if rng.random() < 0.1:  # an old sample that is exactly a copy of one already sent
                    samples.append(data.arrivals[(key, channel)][0] if data.arrivals[(key, channel)] else samples[0])
                ident = (key, channel)
                if ident in pending_swap:  # the previous second's batch overtaken by this one
                    data.signal(key, channel, unit, samples)
                    data.signal(key, channel, unit, pending_swap.pop(ident))
                elif rng.random() < 0.15 and second < seconds - 1:
                    pending_swap[ident] = samples
                else:
                    data.signal(key, channel, unit, samples)
                if rng.random() < 0.1:
                    data.resend(len(data.records) - 1)
        # health: one channel, in order, 1 s batches; validation flags <500 rpm (1) and >15000 rpm (2)
        health = [(start + i * 10, rng.choice([300.0, 800.0, 3_000.0, 9_000.0, 15_500.0, 16_000.0]))
                  for i in range(100)]
        data.signal(data.health_key, "engine_speed", "rpm", health)
        if second % 4 == 1:
            data.resend(len(data.records) - 1)
        # alert: coolant at 10 Hz, hot in known episodes
        coolant = [(start + i * 100, _coolant(second, i)) for i in range(10)]
        data.signal(data.alert_key, "coolant", "degF", coolant)
        # gps: one fix per second, a wandering track, 5-fix batches
        lat += rng.uniform(-2e-4, 4e-4)
        lon += rng.uniform(-2e-4, 4e-4)
        data.gps_track.append((start, lat, lon))
        if len(data.gps_track) % 5 == 0 or second == seconds - 1:
            batch = data.gps_track[(len(data.gps_track) - 1) // 5 * 5:]
            data.send("telemetry.gps", data.gps_key, {
                "batch_id": uuid.uuid4().hex, "source": "test", "org_id": "1", "fleet_id": "7",
                "vehicle_id": data.gps_key, "device_id": "gps",
                "points": [{"timestamp_ms": t, "latitude": a, "longitude": o, "speed": 30.0} for t, a, o in batch]})
    return data


def _coolant(second: int, tenth: int) -> float:
    """Episodes: hot 3.2 s-5.0 s with a dip to 97 (no clear: hysteresis 5), 12.5 s-13.0 s, 21.0 s-22.6 s; a
    0.2 s blip at 17.0 s (shorter than for_duration: no alert)."""
    t = second * 10 + tenth  # in tenths of a second
    if 32 <= t < 50:
        return 97.0 if t in (40, 41) else 104.0 + (t % 3)
    if 125 <= t < 130 or 210 <= t < 226:
        return 120.0
    if t in (170, 171):
        return 150.0
    return 85.0 + (t % 5)


# ---------------------------------------------------------------------------- the independent computation


@dataclass
class Expected:
    windows: dict[WindowId, dict[str, Any]]
    late: dict[tuple[str, str], list[int]]  # event times dead-lettered as late


def expected_windows(arrivals: dict[tuple[str, str], list[tuple[int, float]]]) -> Expected:
    """DESIGN/windows semantics, one sample at a time: drop repeated event times, join every window still open
    (end > greatest earlier time - lateness), late if none is; aggregates from the members."""
    members: dict[WindowId, list[tuple[int, float]]] = defaultdict(list)
    late: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (key, channel), samples in arrivals.items():
        seen: set[int] = set()
        greatest = -math.inf
        for time_ms, value in samples:
            if time_ms in seen:
                continue
            seen.add(time_ms)
            watermark = greatest - LATENESS_MS
            joined = False
            for kind, size, advance in SPECS:
                start = time_ms // advance * advance
                while start + size > time_ms:
                    if start + size > watermark:
                        members[(key, channel, kind, start)].append((time_ms, value))
                        joined = True
                    start -= advance
            if not joined:
                late[(key, channel)].append(time_ms)
            greatest = max(greatest, time_ms)
    windows = {}
    for ident, points in members.items():
        values = sorted(v for _, v in points)
        rank = -(-95 * len(values) // 100)  # ceil(0.95 n) in integers
        windows[ident] = {"count": len(points), "min": values[0], "max": values[-1],
                          "mean": float(np.mean(np.array(values))), "last": max(points)[1],
                          "p95": values[rank - 1]}
    return Expected(windows, late)


def expected_health(samples: list[tuple[int, float]], base_ms: int) -> dict[int, tuple[float, float]]:
    """(health, uptime) per period from the distinct samples: 100 - 10 * flagged share; uptime = share of the
    period covered by [t, t + 60 s) of the whole seconds that had data (here: every second from the first)."""
    distinct = dict(samples)
    out = {}
    for period_start in sorted({t // KPI_PERIOD_MS * KPI_PERIOD_MS for t in distinct}):
        inside = [v for t, v in distinct.items() if period_start <= t < period_start + KPI_PERIOD_MS]
        flagged = sum(1 for v in inside if v < 500 or v > 15_000)
        seconds = sorted({t // 1000 * 1000 for t in distinct if period_start <= t < period_start + KPI_PERIOD_MS})
        covered = min(period_start + KPI_PERIOD_MS, seconds[-1] + 60_000) - seconds[0]
        out[period_start] = (100.0 - 10.0 * flagged / len(inside), 100.0 * covered / KPI_PERIOD_MS)
    return out


def expected_episodes(samples: list[tuple[int, float]], key: str) -> list[tuple[str, str, int, int | None]]:
    """(alert_id, event, started_ms, ended_ms) for RULE over in-order samples."""
    events: list[tuple[str, str, int, int | None]] = []
    phase, since = "idle", 0
    threshold, hysteresis, hold = float(RULE["threshold"]), float(RULE["hysteresis"]), int(RULE["for_duration_ms"])
    for time_ms, value in samples:
        if phase == "active":
            if value <= threshold - hysteresis:
                events.append((f"{RULE['rule_id']}:{key}:{since}", "resolved", since, time_ms))
                phase = "idle"
            continue
        if value <= threshold:
            phase = "idle"
            continue
        if phase == "idle":
            phase, since = "pending", time_ms
        if time_ms - since >= hold:
            events.append((f"{RULE['rule_id']}:{key}:{since}", "fired", since, None))
            phase = "active"
    return events


def track_distance_mi(track: list[tuple[int, float, float]]) -> float:
    total = 0.0
    for (_, lat1, lon1), (_, lat2, lon2) in itertools.pairwise(track):
        p1, p2 = math.radians(lat1), math.radians(lat2)
        a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
        total += 2 * EARTH_RADIUS_MI * math.asin(math.sqrt(a))
    return total


# ---------------------------------------------------------------------------- the worker and the topics


def worker_env(monkeypatch: pytest.MonkeyPatch, app_id: str) -> None:
    """What the worker child inherits: short windows, the test rule, its own app id; faust's own session
    timeout short, so a restarted worker does not wait a minute for its killed predecessor to expire."""
    for name, value in {"TUMBLING_MS": TUMBLING_MS, "HOPPING_SIZE_MS": HOPPING_SIZE_MS,
                        "HOPPING_ADVANCE_MS": HOPPING_ADVANCE_MS, "ALLOWED_LATENESS_MS": LATENESS_MS,
                        "KPI_PERIOD_MS": KPI_PERIOD_MS, "IDLE_FLUSH_S": IDLE_FLUSH_S, "APP_ID": app_id,
                        "ALERT_RULES": json.dumps([RULE])}.items():
        monkeypatch.setenv(f"FLEETSTREAM_STREAMS__{name}", str(value))
    monkeypatch.setenv("BROKER_SESSION_TIMEOUT", "8")
    monkeypatch.setenv("BROKER_HEARTBEAT_INTERVAL", "1")


def worker_settings(kafka_bootstrap: str, home: Path) -> Settings:
    from fleetstream.admin import create_topics

    settings = load_settings(home=home, kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    create_topics(settings.kafka, settings.topics)
    return settings


def wait_for_worker(settings: Settings, services: Services, timeout_s: float = 90.0) -> None:
    """Until the worker's consumer group is stable with partitions (the coordinator of a new group may not be
    known yet: describing it then fails, and is retried)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            wait_for_group(settings.kafka, settings.streams.app_id,
                           timeout_s=max(1.0, deadline - time.monotonic()), check=services.check)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def produce(settings: Settings, records: list[tuple[str, str, dict[str, Any]]]) -> None:
    producer = Producer(settings.kafka.producer(**{"linger.ms": 5, "enable.idempotence": True}))
    for topic, key, record in records:
        producer.produce(topic, key=key.encode(), value=codec.encode(record_type_of(topic), record))
        producer.poll(0)
    assert producer.flush(30) == 0


class Outputs:
    """Reads the derived topics from given offsets and keeps this test's records."""

    def __init__(self, settings: Settings, keys: set[str], extra_topics: tuple[str, ...] = ()):
        self.keys = keys
        self.records: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.consumer = Consumer(settings.kafka.client(**{"group.id": f"wc-reader-{uuid.uuid4().hex[:8]}",
                                                          "enable.auto.commit": False}))
        metadata = self.consumer.list_topics(timeout=10)
        starts = []
        for topic in (*OUTPUT_TOPICS, *extra_topics):
            for partition in metadata.topics[topic].partitions:
                starts.append(TopicPartition(topic, partition, self._end_offset(topic, partition)))
        self.consumer.assign(starts)

    def _end_offset(self, topic: str, partition: int) -> int:
        for _ in range(100):  # topics made a moment ago may not have a leader yet
            try:
                return int(self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
            except KafkaException:
                time.sleep(0.2)
        raise AssertionError(f"no leader for {topic}[{partition}]")

    def poll(self, seconds: float) -> int:
        got, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self.consumer.consume(1000, timeout=0.2):
                key, topic, value = message.key(), message.topic(), message.value()
                if message.error() or topic is None or value is None or key is None or key.decode() not in self.keys:
                    continue
                self.records[topic].append(codec.decode(value, record_type_of(topic)))
                got += 1
        return got

    def settle(self, services: Services, until: Any, timeout_s: float = 90.0, quiet_s: float = 2.0 * IDLE_FLUSH_S
               ) -> None:
        """Read until `until(self)` holds and nothing new came for `quiet_s` (catching late extras too)."""
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            services.check()
            if self.poll(0.5):
                quiet_since = time.monotonic()
            elif until(self) and time.monotonic() - quiet_since >= quiet_s:
                return
        raise AssertionError(f"outputs did not settle within {timeout_s:.0f} s: "
                             f"{ {t: len(r) for t, r in self.records.items()} }")

    def close(self) -> None:
        self.consumer.close()


def window_outputs(records: list[dict[str, Any]]) -> tuple[dict[WindowId, dict[str, Any]], list[WindowId]]:
    found: dict[WindowId, dict[str, Any]] = {}
    repeated = []
    for w in records:
        ident = (w["key"], w["channel"], w["window_kind"], w["window_start_ms"])
        if ident in found:
            repeated.append(ident)
        found[ident] = w
    return found, repeated


def assert_windows_match(expected: Expected, got: dict[WindowId, dict[str, Any]]) -> None:
    missing, unexpected = sorted(set(expected.windows) - set(got)), sorted(set(got) - set(expected.windows))
    assert not missing and not unexpected, f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]}"
    for ident, want in expected.windows.items():
        have = got[ident]
        assert (have["count"], have["min"], have["max"], have["last"], have["p95"]) == (
            want["count"], want["min"], want["max"], want["last"], want["p95"]), ident
        assert math.isclose(have["mean"], want["mean"], rel_tol=1e-9, abs_tol=1e-12), ident
        assert have["window_end_ms"] == ident[3] + (TUMBLING_MS if ident[2] == "tumbling" else HOPPING_SIZE_MS)


def assert_late_letters(expected: Expected, letters: list[dict[str, Any]]) -> None:
    """Every late sample in exactly one `late` dead letter of the analytics stage, counted exactly."""
    late_letters = [d for d in letters if d["error_code"] == "late"]
    assert all(d["stage"] == "window" and d["source_topic"] == "telemetry.signals.valid" for d in late_letters)
    got: dict[tuple[str, str], list[int]] = defaultdict(list)
    for letter in late_letters:
        original = codec.decode(letter["original"], "signal_batch")
        assert letter["sample_count"] == len(original["samples"])
        got[(original["vehicle_id"], original["name"])] += [s["timestamp_ms"] for s in original["samples"]]
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.late.items()}
    assert sum(d["sample_count"] for d in late_letters) == sum(len(v) for v in expected.late.values()) > 0


# ---------------------------------------------------------------------------- the proof


@pytest.mark.integration
@pytest.mark.slow
def test_worker_output_equals_an_independent_computation(kafka_bootstrap: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    worker_env(monkeypatch, f"fleetstream-streams-test-{run}")
    settings = worker_settings(kafka_bootstrap, tmp_path / "home")
    data = generate(run, seconds=26)
    expected = expected_windows(data.arrivals)
    outputs = Outputs(settings, data.keys)
    worker = Services(settings)
    try:
        produce(settings, data.records)
        worker.start("worker", "worker")
        wait_for_worker(settings, worker)

        def complete(out: Outputs) -> bool:
            kpi_periods = {k["period_start_ms"] for k in out.records["analytics.kpi"] if k["scope_id"] == data.gps_key}
            return len(window_outputs(out.records["telemetry.windows"])[0]) >= len(expected.windows) and \
                data.base_ms + 20_000 in kpi_periods

        outputs.settle(worker, complete)
    finally:
        outputs.close()
        worker.stop(timeout_s=15)

    # windows: every one, once, equal to the independent computation
    got, repeated = window_outputs(outputs.records["telemetry.windows"])
    assert repeated == []
    assert_windows_match(expected, got)
    # late samples: dead-lettered with reason late, exactly; validation dead-lettered nothing
    assert_late_letters(expected, outputs.records["dlq.telemetry.signals.valid"])
    assert outputs.records["dlq.telemetry.signals"] == [] and outputs.records["dlq.telemetry.gps"] == []
    # duplicates: generated and not counted (the windows above would be off otherwise)
    sent = sum(len(r["samples"]) for t, _, r in data.records if t == "telemetry.signals")
    distinct = sum(len(set(t for t, _ in samples)) for samples in data.arrivals.values())
    assert sent - distinct > 100

    kpis: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for k in outputs.records["analytics.kpi"]:
        kpis[(k["scope_id"], k["name"], k["period_start_ms"])].append(k["value"])
    # health and uptime per period of the in-order vehicle (two periods closed by watermark, one by idle flush)
    health = expected_health(data.arrivals[(data.health_key, "engine_speed")], data.base_ms)
    assert len(health) == 3
    for period_start, (score, uptime) in health.items():
        assert kpis[(data.health_key, "health_score", period_start)] == [pytest.approx(score, rel=1e-9)]
        assert kpis[(data.health_key, "uptime_pct", period_start)] == [pytest.approx(uptime, rel=1e-9)]
    # distance of the GPS track, over all its periods
    distance = [v for (key, name, _), values in kpis.items() if key == data.gps_key and name == "distance_mi"
                for v in values]
    assert len(distance) == 3
    assert math.isclose(sum(distance), track_distance_mi(data.gps_track), rel_tol=1e-9)
    # alert episodes of the configured rule: fired once, resolved once, same ids
    alerts = [(a["alert_id"], a["event"], a["started_ms"], a["ended_ms"])
              for a in outputs.records["analytics.threshold.exceeded"]]
    want = expected_episodes(data.arrivals[(data.alert_key, "coolant")], data.alert_key)
    assert [e[1] for e in want] == ["fired", "resolved"] * 3
    assert alerts == want
    fired = sum(v for (key, name, _), values in kpis.items() if key == data.alert_key and name == "alerts_fired"
                for v in values)
    assert fired == 3
