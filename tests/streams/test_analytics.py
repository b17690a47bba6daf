"""The analytics stage (streams.analytics) over plain dicts: what the worker's tables hold, without a broker.

Window aggregates are checked against hand-computed values, duplicates and late samples against their exact
counts, alert episodes against the rule, KPI periods against the watermark and the idle flush, and the whole
state against a JSON round trip at a random point of the stream.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest

from fleetstream.config import StreamsSettings
from fleetstream.schemas import codec
from fleetstream.streams.analytics import AnalyticsConfig, Analyzer
from fleetstream.streams.kpis import haversine_mi
from fleetstream.topics import record_type_of

SIGNALS = "telemetry.signals.valid"
GPS = "telemetry.gps.valid"
BASE_MS = 1_700_000_000_000  # a multiple of every window size and KPI period below
NOW_MS = BASE_MS + 3_600_000
RULE = {"rule_id": "hot", "channel": "coolant", "comparator": ">", "threshold": 100.0, "for_duration_ms": 200,
        "hysteresis": 5.0, "severity": "warning"}

Decoded = tuple[str, dict[str, Any]]


def make_config(**overrides: Any) -> AnalyticsConfig:
    settings = {"tumbling_ms": 1_000, "hopping_size_ms": 5_000, "hopping_advance_ms": 1_000,
                "allowed_lateness_ms": 500, "kpi_period_ms": 10_000, "idle_flush_s": 2.0, "alert_rules": [RULE],
                **overrides}
    return AnalyticsConfig.from_settings(StreamsSettings(**settings))


def signal(key: str, channel: str, samples: list[tuple[int, float]], flags: list[int] | None = None,
           unit: str = "rpm") -> dict[str, Any]:
    return {"batch_id": f"{key}-{channel}-{samples[0][0]}", "source": "test", "org_id": "1", "fleet_id": "7",
            "vehicle_id": key, "device_id": "d", "name": channel, "unit": unit,
            "samples": [{"timestamp_ms": t, "value": v, "svalue": None, "flags": (flags or [0] * len(samples))[i]}
                        for i, (t, v) in enumerate(samples)]}


class Run:
    """An Analyzer with its two stores, fed record by record; outputs decoded as the worker's consumers see them."""

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        self.analyzer = Analyzer(config or make_config())
        self.channels: dict[str, Any] = {}
        self.keys: dict[str, Any] = {}
        self.offset = 0
        self.wall_s = 1_000.0

    def feed(self, record: dict[str, Any], topic: str = SIGNALS) -> list[Decoded]:
        self.offset += 1
        self.wall_s += 0.01
        outputs = self.analyzer.process(topic, 0, self.offset, record["vehicle_id"].encode(), record, NOW_MS,
                                        self.wall_s, self.channels, self.keys)
        return [(t, codec.decode(v, record_type_of(t))) for t, _, v in outputs]

    def idle(self, seconds: float = 5.0) -> list[Decoded]:
        self.wall_s += seconds
        outputs, updates = self.analyzer.flush_idle(self.channels, self.keys, NOW_MS, self.wall_s)
        for store, key, state in updates:
            store[key] = state
        return [(t, codec.decode(v, record_type_of(t))) for t, _, v in outputs]

    def round_trip(self) -> None:
        """Serialise both stores as the changelog would and continue from the copies."""
        self.channels = json.loads(json.dumps(self.channels))
        self.keys = json.loads(json.dumps(self.keys))


def windows(outputs: list[Decoded]) -> dict[tuple[str, str, int], dict[str, Any]]:
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    for topic, record in outputs:
        if topic == "telemetry.windows":
            ident = (record["channel"], record["window_kind"], record["window_start_ms"])
            assert ident not in found, f"window {ident} emitted twice"
            found[ident] = record
    return found


def of(outputs: list[Decoded], topic: str) -> list[dict[str, Any]]:
    return [record for t, record in outputs if t == topic]


def ramp(start_ms: int, count: int, step_ms: int = 100, first_value: float = 0.0) -> list[tuple[int, float]]:
    return [(start_ms + i * step_ms, first_value + i) for i in range(count)]


# ---------------------------------------------------------------------------- windows


def test_windows_of_a_known_stream_close_by_watermark_then_by_idle_flush() -> None:
    run = Run()
    samples = ramp(BASE_MS, 30)  # 0.0 .. 29.0 every 100 ms over 3 s
    closed: list[Decoded] = []
    for i in range(0, 30, 10):
        closed += run.feed(signal("v1", "rpm", samples[i:i + 10]))
    # watermark = BASE + 2900 - 500: tumbling [0, 1 s) and [1 s, 2 s) are final, and the hopping windows ending
    # at 1 s and 2 s (starting 4 s and 3 s before the base).
    by_watermark = windows(closed)
    assert sorted((k, s - BASE_MS) for _, k, s in by_watermark) == [
        ("hopping", -4_000), ("hopping", -3_000), ("tumbling", 0), ("tumbling", 1_000)]
    first = by_watermark[("rpm", "tumbling", BASE_MS)]
    assert (first["count"], first["min"], first["max"], first["mean"], first["last"], first["p95"]) == (
        10, 0.0, 9.0, 4.5, 9.0, 9.0)
    assert first["window_end_ms"] == BASE_MS + 1_000 and first["key"] == "v1" and first["unit"] == "rpm"
    second_hop = by_watermark[("rpm", "hopping", BASE_MS - 3_000)]
    # 20 values 0..19: nearest rank ceil(0.95 * 20) = 19 -> 18.0
    assert (second_hop["count"], second_hop["mean"], second_hop["p95"]) == (20, 9.5, 18.0)

    flushed = windows(run.idle())
    # Every remaining window with samples: tumbling [2 s, 3 s), hopping starting -2 s .. +2 s.
    assert sorted((k, s - BASE_MS) for _, k, s in flushed) == [
        ("hopping", -2_000), ("hopping", -1_000), ("hopping", 0), ("hopping", 1_000), ("hopping", 2_000),
        ("tumbling", 2_000)]
    whole = flushed[("rpm", "hopping", BASE_MS - 2_000)]
    assert (whole["count"], whole["min"], whole["max"], whole["last"]) == (30, 0.0, 29.0, 29.0)
    assert whole["p95"] == 28.0  # ceil(0.95 * 30) = 29th of 0..29
    assert math.isclose(whole["mean"], 14.5, rel_tol=0, abs_tol=0)
    assert run.idle() == []  # a flushed channel stays quiet


def test_exact_duplicates_are_dropped_and_counted() -> None:
    run = Run()
    batch = signal("v1", "rpm", ramp(BASE_MS, 10), flags=[2, 0] * 5)
    out = run.feed(batch)
    for _ in range(2):
        out += run.feed(batch)  # the same batch re-sent twice
    assert run.analyzer.duplicates == 20
    out += run.feed(signal("v1", "rpm", ramp(BASE_MS + 1_000, 10, first_value=10.0)))
    out += run.idle()
    tumbling = windows(out)[("rpm", "tumbling", BASE_MS)]
    assert (tumbling["count"], tumbling["mean"]) == (10, 4.5)
    assert windows(out)[("rpm", "hopping", BASE_MS - 3_000)]["count"] == 20
    # 5 flagged of 20 distinct samples; counting the copies it would be 15 of 40.
    health = [k["value"] for k in of(out, "analytics.kpi") if k["name"] == "health_score"]
    assert health == [100.0 - 10.0 * 5 / 20]


def test_late_samples_become_one_dead_letter_with_their_count() -> None:
    run = Run()
    run.feed(signal("v1", "rpm", ramp(BASE_MS, 10)))
    run.feed(signal("v1", "rpm", ramp(BASE_MS + 10_000, 10)))  # watermark BASE + 10.4 s: [.., 5.4 s) closed
    mixed = [(BASE_MS + 150, 99.0), (BASE_MS + 5_000, 98.0), (BASE_MS + 9_950, 97.0), (BASE_MS + 20, 96.0)]
    out = run.feed(signal("v1", "rpm", mixed))
    letters = of(out, "dlq.telemetry.signals.valid")
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["error_code"], letter["stage"], letter["sample_count"]) == ("late", "window", 3)
    original = codec.decode(letter["original"], "signal_batch")
    assert [s["timestamp_ms"] for s in original["samples"]] == [BASE_MS + 150, BASE_MS + 5_000, BASE_MS + 20]
    assert run.analyzer.late_samples == 3
    # 9.95 s missed its tumbling window (closed at 10 s) but not the hopping ones from 6 s to 9 s: it counts
    # only there; the late ones count nowhere.
    final = windows(run.idle())
    assert ("rpm", "tumbling", BASE_MS + 9_000) not in final
    assert final[("rpm", "hopping", BASE_MS + 9_000)]["count"] == 11
    assert final[("rpm", "hopping", BASE_MS + 6_000)]["count"] == 11
    assert final[("rpm", "hopping", BASE_MS + 9_000)]["min"] == 0.0 and \
        final[("rpm", "hopping", BASE_MS + 9_000)]["max"] == 97.0


def test_late_samples_do_not_count_in_the_kpis() -> None:
    """A dead-lettered sample is nowhere else: not in windows and not in the period's sample counts."""
    run = Run()
    run.feed(signal("v1", "rpm", ramp(BASE_MS, 10)))
    run.feed(signal("v1", "rpm", ramp(BASE_MS + 6_000, 10)))
    # Late for every window (watermark BASE + 6.4 s; the youngest window of 10 ms ends at 5 s), and flagged:
    # counted, they would cost health points.
    out = run.feed(signal("v1", "rpm", [(BASE_MS + 10, 1.0), (BASE_MS + 20, 2.0)], flags=[2, 2]))
    assert of(out, "dlq.telemetry.signals.valid")[0]["sample_count"] == 2
    health = [k for k in of(run.idle(), "analytics.kpi") if k["name"] == "health_score"]
    assert [h["value"] for h in health] == [100.0]


# ---------------------------------------------------------------------------- alerts


@pytest.mark.parametrize(("unit", "fired"), [("degF", 1), ("unknown(code=6,sub=2)", 0), ("unknown", 0)])
def test_threshold_rules_never_judge_a_channel_of_unknown_unit(unit: str, fired: int) -> None:
    # A rule's threshold is in the channel's canonical unit; values whose unit the source did not declare for
    # certain (published unchanged, unit unknown) may be in another unit, so no rule applies to them.
    run = Run()
    out = run.feed(signal("v1", "coolant", [(BASE_MS + 100 * i, 150.0) for i in range(10)], unit=unit))
    out += run.idle()
    assert [a["event"] for a in of(out, "analytics.threshold.exceeded")] == ["fired"] * fired
    run.round_trip()  # and after a restart from the changelog
    out = run.feed(signal("v1", "coolant", [(BASE_MS + 5_000 + 100 * i, 150.0) for i in range(10)], unit=unit))
    assert len(of(out, "analytics.threshold.exceeded")) == 0


def test_alerts_fire_once_per_episode_and_resolve_with_the_same_id() -> None:
    run = Run()
    # 100 ms steps: hot (>100) from 1.0 s to 1.9 s, dips to 98 (not below 95: no clear), hot again, clears at
    # 3.0 s; a second episode 4.0 s .. 4.5 s; a blip of 100 ms (shorter than for_duration) at 6.0 s.
    values = [90.0] * 10 + [110.0] * 10 + [98.0] * 2 + [120.0] * 8 + [90.0] * 10 + [105.0] * 6 + [80.0] * 14 + \
        [130.0] + [80.0] * 9
    samples = [(BASE_MS + 100 * i, v) for i, v in enumerate(values)]
    out: list[Decoded] = []
    for i in range(0, len(samples), 7):  # batches that cut episodes in pieces
        out += run.feed(signal("v1", "coolant", samples[i:i + 7], unit="degF"))
    out += run.idle()
    alerts = of(out, "analytics.threshold.exceeded")
    assert [(a["event"], a["started_ms"] - BASE_MS, a["ended_ms"]) for a in alerts] == [
        ("fired", 1_000, None), ("resolved", 1_000, BASE_MS + 3_000),
        ("fired", 4_000, None), ("resolved", 4_000, BASE_MS + 4_600)]
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"] == f"hot:v1:{BASE_MS + 1_000}"
    assert alerts[2]["alert_id"] == alerts[3]["alert_id"] != alerts[0]["alert_id"]
    fired = [k for k in of(out, "analytics.kpi") if k["name"] == "alerts_fired"]
    assert sum(k["value"] for k in fired) == 2


# ---------------------------------------------------------------------------- KPIs


def test_kpi_periods_close_by_watermark_and_the_last_on_idle_flush() -> None:
    run = Run()
    out: list[Decoded] = []
    flagged_by_period = {0: 0, 1: 0, 2: 0}
    for second in range(25):  # 25 one-second batches of 10 samples: periods [0, 10 s), [10, 20), [20, 30)
        flags = [2 if (second * 10 + i) % 7 == 0 else 0 for i in range(10)]
        flagged_by_period[second // 10] += sum(1 for f in flags if f)
        batch_out = run.feed(signal("v1", "rpm", ramp(BASE_MS + second * 1_000, 10), flags=flags))
        closed = {k["period_start_ms"] for k in of(batch_out, "analytics.kpi")}
        # Period p closes with the first batch whose watermark (max - 0.5 s) reaches its end: second 10p + 10.
        assert closed == ({BASE_MS + (second // 10 - 1) * 10_000} if second in (10, 20) else set()), second
        out += batch_out
    assert of(run.idle(1.0), "analytics.kpi") == []  # not idle yet (2 s)
    out += run.idle(5.0)
    health = {k["period_start_ms"]: k["value"] for k in of(out, "analytics.kpi") if k["name"] == "health_score"}
    totals = {0: 100, 1: 100, 2: 50}
    assert health == {BASE_MS + p * 10_000: pytest.approx(100.0 - 10.0 * flagged_by_period[p] / totals[p], abs=1e-12)
                      for p in range(3)}
    uptime = {k["period_start_ms"]: k["value"] for k in of(out, "analytics.kpi") if k["name"] == "uptime_pct"}
    assert uptime[BASE_MS] == 100.0 and uptime[BASE_MS + 20_000] == 100.0


def test_a_location_only_key_reports_its_last_period_distance_on_idle_flush() -> None:
    """Fleet locations carry no samples: the idle flush must still close the period they moved in."""
    run = Run()
    points = [{"timestamp_ms": BASE_MS + i * 1_000, "latitude": 48.0 + i * 0.001, "longitude": 11.0,
               "speed": 30.0, "engine_state": "On"} for i in range(15)]
    out: list[Decoded] = []
    for i in range(0, 15, 5):
        out += run.feed({"batch_id": str(i), "source": "t", "org_id": "1", "fleet_id": "7", "vehicle_id": "g1",
                         "device_id": "d", "points": points[i:i + 5]}, topic=GPS)
    out += run.idle()
    lat = np.array([p["latitude"] for p in points])
    lon = np.array([p["longitude"] for p in points])
    expected = float(haversine_mi(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum())
    distance = [k for k in of(out, "analytics.kpi") if k["name"] == "distance_mi"]
    assert {k["period_start_ms"] for k in distance} == {BASE_MS, BASE_MS + 10_000}
    assert math.isclose(sum(k["value"] for k in distance), expected, rel_tol=1e-12)


# ---------------------------------------------------------------------------- state


def _messy_stream(seed: int) -> list[dict[str, Any]]:
    """Two keys, three channels, out-of-order and late samples, re-sent batches, an alert channel."""
    rng = random.Random(seed)
    records = []
    for second in range(30):
        for key in ("v1", "v2"):
            for channel in ("rpm", "map"):
                samples = [(BASE_MS + second * 1_000 + i * 50, round(rng.uniform(0, 1_000), 3)) for i in range(20)]
                rng.shuffle(samples[:6])
                if rng.random() < 0.2:
                    samples.append((BASE_MS + max(0, second - 7) * 1_000 + rng.randrange(1_000), 1.5))
                records.append(signal(key, channel, samples, flags=[rng.choice([0, 0, 0, 1]) for _ in samples]))
                if rng.random() < 0.1:
                    records.append(records[-1])
            hot = 120.0 if (second // 4) % 2 else 90.0
            records.append(signal(key, "coolant", [(BASE_MS + second * 1_000 + i * 100, hot) for i in range(10)],
                                  unit="degF"))
    return records


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_survives_a_json_round_trip_mid_stream_with_identical_outputs(seed: int) -> None:
    records = _messy_stream(seed)
    cut = random.Random(seed).randrange(1, len(records) - 1)
    straight, resumed = Run(), Run()
    expected = [o for r in records for o in straight.feed(r)] + straight.idle()
    got = [o for r in records[:cut] for o in resumed.feed(r)]
    resumed.round_trip()
    got += [o for r in records[cut:] for o in resumed.feed(r)] + resumed.idle()
    assert got == expected
    kinds = {topic for topic, _ in expected}
    assert {"telemetry.windows", "analytics.kpi", "analytics.threshold.exceeded",
            "dlq.telemetry.signals.valid"} <= kinds  # the stream exercised every output


def test_a_replay_after_a_crash_applies_nothing_twice() -> None:
    """Offsets are written after the states: a replayed message each state has applied changes nothing."""
    run = Run()
    stats = {"batch_id": "n1", "source": "test", "org_id": "1", "fleet_id": "7", "vehicle_id": "v1",
             "device_id": "d", "name": "CAN1", "timestamp_ms": BASE_MS, "total_messages": 10, "matched_messages": 7,
             "unmatched_messages": 3, "error_messages": 0, "min_time_ms": BASE_MS, "max_time_ms": BASE_MS,
             "rate": 1.0}
    run.analyzer.process("telemetry.netstats.valid", 0, 4, b"v1", stats, NOW_MS, 1.0, run.channels, run.keys)
    before = json.dumps(run.keys, sort_keys=True)
    assert run.analyzer.process("telemetry.netstats.valid", 0, 4, b"v1", stats, NOW_MS, 2.0, run.channels,
                                run.keys) == []
    assert json.dumps(run.keys, sort_keys=True) == before  # the network statistic is not counted twice
    batch = signal("v1", "rpm", [(BASE_MS + i * 10, 1_000.0 + i) for i in range(50)])
    run.analyzer.process(SIGNALS, 0, 9, b"v1", batch, NOW_MS, 3.0, run.channels, run.keys)
    channels, keys = json.dumps(run.channels, sort_keys=True), json.dumps(run.keys, sort_keys=True)
    assert run.analyzer.process(SIGNALS, 0, 9, b"v1", batch, NOW_MS, 4.0, run.channels, run.keys) == []
    assert (json.dumps(run.channels, sort_keys=True), json.dumps(run.keys, sort_keys=True)) == (channels, keys)


def test_a_replay_over_a_key_state_written_before_the_crash_redoes_only_the_channel() -> None:
    """Key states are written before channel states: a crash in between replays the channel's part alone, so
    the windows come out again and the key's KPI samples are not counted twice."""
    whole, crashed = Run(), Run()
    first = signal("v1", "rpm", [(BASE_MS + i * 100, 1_000.0 + i) for i in range(20)])
    second = signal("v1", "rpm", [(BASE_MS + 2_000 + i * 100, 2_000.0 + i) for i in range(20)])
    for run in (whole, crashed):
        run.analyzer.process(SIGNALS, 0, 1, b"v1", first, NOW_MS, 1.0, run.channels, run.keys)
    channels_before = json.loads(json.dumps(crashed.channels))
    expected = whole.analyzer.process(SIGNALS, 0, 2, b"v1", second, NOW_MS, 2.0, whole.channels, whole.keys)
    crashed.analyzer.process(SIGNALS, 0, 2, b"v1", second, NOW_MS, 2.0, crashed.channels, crashed.keys)
    crashed.channels = channels_before  # the key state reached the changelog, the channel state did not
    replayed = crashed.analyzer.process(SIGNALS, 0, 2, b"v1", second, NOW_MS, 3.0, crashed.channels, crashed.keys)
    assert replayed == [o for o in expected if o[0] == "telemetry.windows"] and replayed
    assert crashed.keys["v1"]["samples_total"] == whole.keys["v1"]["samples_total"] == 40
