"""KPI formulas against hand-computed cases and brute-force oracles; custom metrics; dyno runs."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.schemas import codec
from fleetstream.streams.custom_metrics import MetricDefinition, MetricsAggregator
from fleetstream.streams.kpis import (
    AlertStats,
    DynoRunTracker,
    HealthInputs,
    LocationTotals,
    RunDetection,
    VehicleKpis,
    alert_stats,
    detect_runs,
    fleet_records,
    haversine_mi,
    health_band,
    health_score,
    network_match_rate,
    out_of_range_count,
    run_records,
    summarise_run,
    uptime_pct,
    vehicle_records,
)

# ---------------------------------------------------------------------------- health


def test_health_score_hand_computed() -> None:
    assert health_score(HealthInputs(period_end_ms=1_000, last_data_ms=900)) == 100.0
    # 1 critical (20) + 2 warnings (10) + 1 DTC (5) + 25 % out of range (2.5) + fresh data = 62.5
    inputs = HealthInputs(period_end_ms=1_000, active_critical_alerts=1, active_warning_alerts=2, active_dtcs=1,
                          samples_total=400, samples_out_of_range=100, last_data_ms=1_000)
    assert health_score(inputs) == 62.5
    # Caps: 5 critical cost 40, 10 warnings 20, 9 DTCs 20, all out of range 10, stale 10 = 0.
    worst = HealthInputs(period_end_ms=10**7, active_critical_alerts=5, active_warning_alerts=10, active_dtcs=9,
                         samples_total=3, samples_out_of_range=3, last_data_ms=0)
    assert health_score(worst) == 0.0
    assert health_score(HealthInputs(period_end_ms=10**7, last_data_ms=None)) == 90.0  # no data at all: stale
    assert [health_band(s) for s in (100, 90, 89.9, 75, 50, 25, 24.9)] == [
        "excellent", "excellent", "good", "good", "fair", "poor", "critical"]


def test_out_of_range_counts_warning_flags_only() -> None:
    assert out_of_range_count([0, 1, 2, 3, 4, 5, 0]) == 4  # clamped alone (4) is not a warning flag


# ---------------------------------------------------------------------------- uptime


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-500, 2_500), max_size=40), st.integers(0, 1_000), st.integers(1, 1_000),
       st.integers(1, 400))
def test_uptime_is_the_covered_share_of_the_period(times: list[int], start: int, length: int, gap: int) -> None:
    end = start + length
    covered = {x for t in times for x in range(t, t + gap) if start <= x < end}
    assert math.isclose(uptime_pct(times, start, end, max_gap_ms=gap), 100.0 * len(covered) / length)


def test_uptime_hand_computed() -> None:
    # Samples every 30 s for the first half hour of an hour, 60 s tolerance: 30 min + 60 s... capped by the gap.
    times = list(range(0, 1_800_000, 30_000))
    assert uptime_pct(times, 0, 3_600_000) == pytest.approx(100.0 * (1_770_000 + 60_000) / 3_600_000)
    assert uptime_pct([], 0, 10) == 0.0


# ---------------------------------------------------------------------------- alerts and network


def alert(alert_id: str, event: str, started: int, severity: str = "warning", ended: int | None = None
          ) -> dict[str, Any]:
    return {"alert_id": alert_id, "event": event, "severity": severity, "started_ms": started, "ended_ms": ended}


def test_alert_counts_and_time_to_acknowledge() -> None:
    alerts = [
        alert("a", "fired", 1_000, "critical"), alert("a", "resolved", 1_000, "critical", ended=61_000),
        alert("b", "fired", 2_000), alert("b", "resolved", 2_000, ended=900_000),
        alert("c", "fired", 3_000),
        alert("old", "fired", -5_000),  # started before the period: not counted
    ]
    stats = alert_stats(alerts, {"b": 32_000, "x": 1}, 0, 3_600_000)
    assert stats.fired_by_severity == {"critical": 1, "warning": 2} and stats.fired == 3
    # a: resolved after 60 s; b: explicit ack after 30 s (earlier than its resolve); c: not acknowledged.
    assert stats.acknowledged == 2 and stats.unacknowledged == 1
    assert stats.mean_time_to_ack_ms == 45_000.0


def test_network_match_rate_is_weighted_by_messages() -> None:
    stats = [{"matched_messages": 90, "total_messages": 100}, {"matched_messages": 0, "total_messages": 900}]
    assert network_match_rate(stats) == (90, 1_000, 0.09)  # not the mean of 0.9 and 0.0
    assert network_match_rate([]) == (0, 0, None)


# ---------------------------------------------------------------------------- locations


def test_haversine_known_distances() -> None:
    assert float(haversine_mi(0, 0, 1, 0)) == pytest.approx(69.093, abs=1e-3)  # one degree of latitude
    lax_jfk = float(haversine_mi(33.9425, -118.4081, 40.6413, -73.7781))
    assert lax_jfk == pytest.approx(2_470, rel=5e-3)


def loc(t: int, lat: float, lon: float, state: str | None, speed: float | None) -> dict[str, Any]:
    return {"timestamp_ms": t, "latitude": lat, "longitude": lon, "engine_state": state, "speed_mph": speed}


def test_distance_and_idle_time_from_locations() -> None:
    points = [loc(0, 0.0, 0.0, "On", 30.0), loc(60_000, 0.01, 0.0, "Idle", 0.0), loc(120_000, 0.01, 0.0, "On", 0.5),
              loc(180_000, 0.01, 0.0, "On", 20.0), loc(1_200_000, 0.02, 0.0, "Off", 0.0)]
    whole = LocationTotals(max_gap_ms=300_000)
    whole.add(points)
    assert whole.distance_mi == pytest.approx(2 * 0.69093, rel=1e-4)
    assert whole.idle_ms == 120_000  # Idle for 60 s, then On below 1 mph for 60 s; the 17 min gap is not idle
    split = LocationTotals(max_gap_ms=300_000)
    split.add(list(reversed(points[:2])))
    split = LocationTotals.from_dict(json.loads(json.dumps(split.to_dict())))
    split.add([*points[2:], loc(30_000, 5.0, 5.0, "Idle", 0.0)])  # the last one is older: skipped
    assert (split.distance_mi, split.idle_ms, split.skipped) == (pytest.approx(whole.distance_mi), 120_000, 1)


# ---------------------------------------------------------------------------- vehicle and fleet records


def test_vehicle_and_fleet_records() -> None:
    a = VehicleKpis("v1", health_score=95.0, uptime_pct=80.0, alerts=AlertStats({"warning": 2}, 2, 0, 60_000),
                    network_matched=90, network_total=100, distance_mi=10.0, idle_time_s=60.0)
    b = VehicleKpis("v2", health_score=40.0, uptime_pct=20.0, alerts=AlertStats({"critical": 1}, 0, 1, 0),
                    network_matched=0, network_total=900, distance_mi=5.0, idle_time_s=0.0)
    records = vehicle_records(a, 0, 3_600_000, 3_700_000)
    assert {r["name"]: r["value"] for r in records}["mean_time_to_ack_ms"] == 30_000.0
    fleet = fleet_records("f1", [a, b], 0, 3_600_000, 3_700_000)
    values = {(r["name"], tuple(sorted(r["dimensions"].items()))): r["value"] for r in fleet}
    assert values[("health_score", ())] == 67.5 and values[("uptime_pct", ())] == 50.0
    assert values[("network_match_rate", ())] == 0.09 and values[("distance_mi", ())] == 15.0
    assert values[("alerts_fired", (("severity", "critical"),))] == 1.0
    assert values[("mean_time_to_ack_ms", ())] == 30_000.0
    assert values[("vehicles_by_health_band", (("band", "excellent"),))] == 1.0
    assert values[("vehicles_by_health_band", (("band", "poor"),))] == 1.0
    for record in records + fleet:
        assert codec.decode(codec.encode("kpi", record), "kpi") == record


# ---------------------------------------------------------------------------- dyno runs


def synthetic_pull(start_ms: int, hz: int = 50) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Idle 2 s, a 6 s WOT sweep 2000 → 7000 rpm, coast 2 s. Torque peaks at 4500 rpm."""
    t = np.arange(0, 10_000, 1_000 // hz, dtype=np.int64)
    sweep = np.clip((t - 2_000) / 6_000, 0, 1)
    in_pull = (t >= 2_000) & (t <= 8_000)
    rpm = np.where(in_pull, 2_000 + 5_000 * sweep, 900.0)
    torque = np.where(in_pull, 400 - ((rpm - 4_500) / 100) ** 2 / 4, 5.0)
    hp = torque * rpm / 5252.0
    afr = np.where(in_pull, 12.5 + sweep, 14.7)
    ts = t + start_ms
    return {"engine_speed": (ts, rpm), "torque": (ts, torque), "power": (ts, hp), "afr": (ts, afr)}


def test_run_detection_and_summary_of_a_pull() -> None:
    channels = synthetic_pull(0)
    runs = detect_runs(*channels["power"])
    assert runs == [(2_000, 8_000)]
    summary = summarise_run(*runs[0], channels)
    rpm, hp = channels["engine_speed"][1], channels["power"][1]
    in_run = (channels["power"][0] >= 2_000) & (channels["power"][0] <= 8_000)
    assert summary.peak_hp == hp[in_run].max() and summary.rpm_at_peak_hp == rpm[in_run][np.argmax(hp[in_run])]
    assert summary.peak_torque_ftlb == 400.0 and summary.rpm_at_peak_torque == 4_500.0
    assert (summary.afr_min, summary.afr_max) == (12.5, 13.5)
    assert summary.afr_mean == pytest.approx(13.0, abs=1e-9)
    records = run_records(summary, "cell-3", "", 0)
    assert {r["scope_id"] for r in records} == {"cell-3:2000"}
    for record in records:
        assert codec.decode(codec.encode("kpi", record), "kpi") == record


def test_short_bursts_and_gaps_split_runs() -> None:
    detection = RunDetection(power_threshold_hp=10, min_duration_ms=2_000, max_gap_ms=500)
    ts = [0, 400, 800, 1_200, 1_600, 2_000, 3_000, 3_400, 3_800, 9_000, 9_100]
    hp = [50, 60, 70, 80, 90, 100, 50, 60, 70, 5, 80]
    assert detect_runs(ts, hp, detection) == [(0, 2_000)]  # 3000..3800 is too short, 9100 alone too


def test_torque_is_derived_from_power_when_no_torque_channel() -> None:
    channels = synthetic_pull(0)
    del channels["torque"]
    summary = summarise_run(2_000, 8_000, channels)
    assert summary.peak_torque_ftlb == pytest.approx(400.0) and summary.rpm_at_peak_torque == 4_500.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=12), st.data())
def test_live_tracker_finds_the_same_runs_as_the_offline_detection(batch_sizes: list[int],
                                                                   data: st.DataObject) -> None:
    pulls = [synthetic_pull(0), synthetic_pull(10_000), synthetic_pull(20_000)]
    channels = {name: (np.concatenate([p[name][0] for p in pulls]), np.concatenate([p[name][1] for p in pulls]))
                for name in pulls[0]}
    offline = [summarise_run(a, b, channels) for a, b in detect_runs(*channels["power"])]
    tracker = DynoRunTracker("cell-3", RunDetection(channel_wait_ms=10**9), sorted(channels))  # wait for all
    found = []
    position = dict.fromkeys(channels, 0)
    restart_at = data.draw(st.integers(0, len(batch_sizes)))
    for step, size in enumerate(batch_sizes * 20):
        name = data.draw(st.sampled_from(sorted(channels)))
        ts, values = channels[name]
        found += tracker.process(name, ts[position[name]:position[name] + size],
                                 values[position[name]:position[name] + size])
        position[name] += size
        if step == restart_at:
            tracker = DynoRunTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    for name, (ts, values) in channels.items():
        found += tracker.process(name, ts[position[name]:], values[position[name]:])
    found += tracker.flush()
    assert found == offline and len(found) == 3


# ---------------------------------------------------------------------------- custom metrics


DEFINITIONS = [
    MetricDefinition(name="samples", kind="counter", count_samples=True, dimensions=["name"]),
    MetricDefinition(name="rpm_sum", kind="counter", where={"name": "EngineSpeed"}),
    MetricDefinition(name="rpm_now", kind="gauge", where={"name": "EngineSpeed"}, unit="rpm"),
    MetricDefinition(name="rpm_hist", kind="histogram", where={"name": "EngineSpeed"}, buckets=[1_000, 3_000],
                     scope="fleet", scope_field="fleet_id", dimensions=["unit"], unit="rpm"),
]
batches_strategy = st.lists(
    st.tuples(st.sampled_from(["EngineSpeed", "Speed"]),
              st.lists(st.tuples(st.integers(0, 5_000), st.sampled_from([500.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0])),
                       max_size=15)),
    max_size=8)


def run_metrics(batches: list[tuple[str, list[tuple[int, float]]]], restart_after: int | None = None
                ) -> tuple[list[dict[str, Any]], int]:
    aggregator = MetricsAggregator(DEFINITIONS, allowed_lateness_ms=200)
    records, late = [], 0
    for number, (name, samples) in enumerate(batches):
        unit = "rpm" if name == "EngineSpeed" else "mph"
        context = {"vehicle_id": "v1", "fleet_id": "f1", "name": name, "unit": unit}
        out = aggregator.process(context, [t for t, _ in samples], [v for _, v in samples], computed_at_ms=0)
        records += out.records
        late += out.late_samples
        if number == restart_after:
            aggregator = MetricsAggregator.from_dict(json.loads(json.dumps(aggregator.to_dict())), DEFINITIONS)
    return records + aggregator.flush(10**9, computed_at_ms=0), late


def metrics_oracle(batches: list[tuple[str, list[tuple[int, float]]]]) -> dict[tuple[Any, ...], float]:
    """Per metric and 1 s period, from the samples that were on time (period end > watermark before them)."""
    watermark = -math.inf
    on_time: list[tuple[str, int, float, int]] = []
    arrival = 0
    for name, samples in batches:
        for t, v in samples:
            if (t // 60_000 + 1) * 60_000 > watermark:
                on_time.append((name, t, v, arrival))
            arrival += 1
        watermark = max([watermark] + [t - 200 for t, _ in samples])
    expected: dict[tuple[Any, ...], float] = {}
    for name in {n for n, *_ in on_time}:
        expected[("samples", "vehicle", "v1", 0, (("name", name),))] = sum(1 for s in on_time if s[0] == name)
    rpm = [s for s in on_time if s[0] == "EngineSpeed"]
    if rpm:
        expected[("rpm_sum", "vehicle", "v1", 0, ())] = sum(s[2] for s in rpm)
        expected[("rpm_now", "vehicle", "v1", 0, ())] = max(rpm, key=lambda s: (s[1], s[3]))[2]
        for le, bound in (("1000", 1_000.0), ("3000", 3_000.0), ("+Inf", math.inf)):
            key = ("rpm_hist_bucket", "fleet", "f1", 0, (("le", le), ("unit", "rpm")))
            expected[key] = sum(1 for s in rpm if s[2] <= bound)
        expected[("rpm_hist_count", "fleet", "f1", 0, (("unit", "rpm"),))] = len(rpm)
        expected[("rpm_hist_sum", "fleet", "f1", 0, (("unit", "rpm"),))] = sum(s[2] for s in rpm)
    return expected


def test_tracker_stops_waiting_for_a_silent_channel() -> None:
    channels = synthetic_pull(0)
    tracker = DynoRunTracker("cell-3", RunDetection(channel_wait_ms=5_000))
    assert tracker.process("afr", channels["afr"][0][:10], channels["afr"][1][:10]) == []  # then AFR goes quiet
    assert tracker.process("power", *channels["power"]) == []  # power ends 2 s after the run: keep waiting
    later = synthetic_pull(10_000)["power"]
    (summary,) = tracker.process("power", later[0][:300], later[1][:300])  # 15 s: waited 7 s > 5 s
    assert (summary.start_ms, summary.end_ms, summary.afr_mean) == (2_000, 8_000, None)
    assert summary.peak_hp == summarise_run(2_000, 8_000, channels).peak_hp


@settings(max_examples=200, deadline=None)
@given(batches_strategy, st.data())
def test_custom_metrics_match_the_oracle_and_survive_a_restart(batches: list[tuple[str, list[tuple[int, float]]]],
                                                               data: st.DataObject) -> None:
    records, late = run_metrics(batches)
    got = {(r["name"], r["scope"], r["scope_id"], r["period_start_ms"], tuple(sorted(r["dimensions"].items()))):
           r["value"] for r in records}
    assert len(got) == len(records)  # each (metric, period, dimensions) once
    assert got == metrics_oracle(batches)
    assert late == 0  # one 60 s period and a 5 s span: nothing can be late here
    restart_after = data.draw(st.integers(0, max(0, len(batches) - 1)))
    assert run_metrics(batches, restart_after) == (records, late)
    for record in records:
        assert codec.decode(codec.encode("kpi", record), "kpi") == record


def test_metric_periods_close_on_the_watermark_and_late_samples_are_counted() -> None:
    aggregator = MetricsAggregator([MetricDefinition(name="n", kind="counter", count_samples=True,
                                                     period_ms=1_000)], allowed_lateness_ms=100)
    first = aggregator.process({"vehicle_id": "v"}, [100, 900, 1_050], [1, 1, 1], computed_at_ms=5)
    assert first.records == []  # watermark 950: [0, 1000) still open
    second = aggregator.process({"vehicle_id": "v"}, [1_200, 500], [1, 1], computed_at_ms=5)
    assert second.late_samples == 1
    assert [(r["period_start_ms"], r["value"]) for r in second.records] == [(0, 2.0)]


def test_histogram_needs_ascending_buckets() -> None:
    with pytest.raises(ValueError):
        MetricDefinition(name="h", kind="histogram", buckets=[3.0, 1.0])
