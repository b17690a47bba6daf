"""Threshold and DTC alert episodes: for-duration, hysteresis, one fired and one resolved per episode."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fleetstream.schemas import codec
from fleetstream.streams.alerts import AlertRule, DtcAlerts, DtcAlertSettings, ThresholdAlerts

Batch = list[tuple[int, float]]


def evaluation_order(batches: list[Batch]) -> list[tuple[int, float]]:
    """Each batch sorted by time (stable); samples older than anything already evaluated are skipped."""
    ordered: list[tuple[int, float]] = []
    for batch in batches:
        for time_ms, value in sorted(batch, key=lambda s: s[0]):
            if not ordered or time_ms >= max(t for t, _ in ordered):
                ordered.append((time_ms, value))
    return ordered


def fire_pred(op: str, v: float, t: float) -> bool:
    return {">": v > t, ">=": v >= t, "<": v < t, "<=": v <= t, "==": v == t, "!=": v != t}[op]


def clear_pred(op: str, v: float, t: float, h: float) -> bool:
    return {">": v <= t - h, ">=": v < t - h, "<": v >= t + h, "<=": v > t + h,
            "==": abs(v - t) > h, "!=": v == t}[op]


def oracle_episodes(rule: AlertRule, samples: list[tuple[int, float]]) -> list[tuple[str, int, int | None]]:
    """Scan for runs of firing samples, the first sample of a run held long enough, then the first clear."""
    out: list[tuple[str, int, int | None]] = []
    i = 0
    while i < len(samples):
        if not fire_pred(rule.comparator, samples[i][1], rule.threshold):
            i += 1
            continue
        run_end = i
        while run_end + 1 < len(samples) and fire_pred(rule.comparator, samples[run_end + 1][1], rule.threshold):
            run_end += 1
        started = samples[i][0]
        fired_at = next((k for k in range(i, run_end + 1) if samples[k][0] - started >= rule.for_duration_ms), None)
        if fired_at is None:
            i = run_end + 1
            continue
        out.append(("fired", started, None))
        cleared = next((c for c in range(fired_at + 1, len(samples))
                        if clear_pred(rule.comparator, samples[c][1], rule.threshold, rule.hysteresis)), None)
        if cleared is None:
            break
        out.append(("resolved", started, samples[cleared][0]))
        i = cleared + 1
        while i < len(samples) and samples[i][0] == samples[cleared][0]:
            i += 1  # the next episode starts after the end of this one
    return out


rules = st.builds(
    AlertRule, rule_id=st.just("r1"), channel=st.just("coolant_temp"),
    comparator=st.sampled_from([">", ">=", "<", "<=", "==", "!="]), threshold=st.just(10.0),
    for_duration_ms=st.sampled_from([0, 200, 1_000]), hysteresis=st.sampled_from([0.0, 1.0, 2.0]),
    severity=st.sampled_from(["warning", "critical"]))
sample_values = st.sampled_from([7.0, 8.0, 8.5, 9.0, 10.0, 10.5, 11.0, 12.0])


@st.composite
def batches(draw: st.DrawFn) -> list[Batch]:
    clock = 0
    out: list[Batch] = []
    for _ in range(draw(st.integers(1, 6))):
        batch: Batch = []
        for _ in range(draw(st.integers(0, 20))):
            clock += draw(st.sampled_from([0, 100, 250, 500]))
            back = draw(st.sampled_from([0, 0, 0, 300]))  # occasionally out of order
            batch.append((clock - back, draw(sample_values)))
        out.append(batch)
    return out


def run(rule: AlertRule, data: list[Batch], restart_after: int | None = None) -> list[dict[str, Any]]:
    alerts = ThresholdAlerts("veh-1", rule.channel, [rule])
    emitted: list[dict[str, Any]] = []
    for number, batch in enumerate(data):
        emitted.extend(alerts.process([t for t, _ in batch], [v for _, v in batch]).alerts)
        if number == restart_after:
            alerts = ThresholdAlerts.from_dict(json.loads(json.dumps(alerts.to_dict())), [rule])
    return emitted


@settings(max_examples=400, deadline=None)
@given(rules, batches())
def test_episodes_match_the_oracle(rule: AlertRule, data: list[Batch]) -> None:
    emitted = run(rule, data)
    expected = oracle_episodes(rule, evaluation_order(data))
    assert [(a["event"], a["started_ms"], a["ended_ms"]) for a in emitted] == expected


@settings(max_examples=300, deadline=None)
@given(rules, batches())
def test_one_fired_then_one_resolved_per_episode_with_the_same_id(rule: AlertRule, data: list[Batch]) -> None:
    emitted = run(rule, data)
    events = [a["event"] for a in emitted]
    assert events == (["fired", "resolved"] * len(events))[: len(events)]  # strictly alternating: no storms
    for fired, resolved in zip(emitted[::2], emitted[1::2], strict=False):
        assert fired["alert_id"] == resolved["alert_id"] == f"r1:veh-1:{fired['started_ms']}"
        assert resolved["ended_ms"] >= fired["started_ms"]
    assert len({a["alert_id"] for a in emitted[::2]}) == len(emitted[::2])


@settings(max_examples=200, deadline=None)
@given(rules, batches(), st.data())
def test_restart_from_serialised_state_changes_nothing(rule: AlertRule, data: list[Batch],
                                                       draw: st.DataObject) -> None:
    restart_after = draw.draw(st.integers(0, len(data) - 1))
    assert run(rule, data, restart_after) == run(rule, data)


def test_for_duration_must_elapse_before_firing() -> None:
    rule = AlertRule(rule_id="hot", channel="iat", comparator=">", threshold=200.0, for_duration_ms=5_000,
                     severity="critical")
    alerts = ThresholdAlerts("veh-1", "iat", [rule])
    # Above for 4 s, dips, then above from 10 s: fires at 15 s with started_ms 10 s.
    out = alerts.process([0, 2_000, 4_000, 5_000, 10_000, 12_000, 15_000], [210, 220, 230, 150, 210, 215, 205])
    assert [(a["event"], a["started_ms"], a["value"]) for a in out.alerts] == [("fired", 10_000, 205.0)]
    assert out.alerts[0]["severity"] == "critical" and out.alerts[0]["alert_id"] == "hot:veh-1:10000"


def test_hysteresis_keeps_the_alert_until_the_value_crosses_threshold_minus_hysteresis() -> None:
    rule = AlertRule(rule_id="rpm", channel="engine_speed", comparator=">", threshold=6_000, hysteresis=500)
    alerts = ThresholdAlerts("veh-1", "engine_speed", [rule])
    out = alerts.process([0, 1, 2, 3, 4, 5, 6], [6_100, 5_900, 6_050, 5_600, 5_500, 6_200, 5_000])
    assert [(a["event"], a["started_ms"], a["ended_ms"]) for a in out.alerts] == [
        ("fired", 0, None), ("resolved", 0, 4), ("fired", 5, None), ("resolved", 5, 6)]


def test_out_of_order_samples_behind_the_episode_are_skipped() -> None:
    rule = AlertRule(rule_id="r", channel="c", comparator="<", threshold=1.0)
    alerts = ThresholdAlerts("k", "c", [rule])
    alerts.process([100], [5.0])
    out = alerts.process([50, 150], [0.0, 0.5])
    assert out.skipped_out_of_order == 1
    assert [a["started_ms"] for a in out.alerts] == [150]


def test_rules_of_other_channels_are_ignored_and_config_is_validated() -> None:
    rule = AlertRule(rule_id="r", channel="other", comparator=">", threshold=1.0)
    assert ThresholdAlerts("k", "c", [rule]).process([1], [5.0]).alerts == []
    with pytest.raises(ValidationError):
        AlertRule(rule_id="r", channel="c", comparator="=>", threshold=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AlertRule(rule_id="r", channel="c", comparator=">", threshold=1.0, hysteresis=-1)


def dtc(dtc_id: str, status: str, time_ms: int) -> dict[str, Any]:
    return {"dtc_id": dtc_id, "status": status, "description": "Cylinder 1 misfire", "timestamp_ms": time_ms}


def test_dtc_fires_once_per_episode_and_resolves_when_test_failed_clears() -> None:
    alerts = DtcAlerts("veh-1", DtcAlertSettings(severity_by_prefix={"P03": "critical"}))
    out = alerts.process([dtc("P0301", "2F", 1_000), dtc("P0301", "2F", 2_000), dtc("U0100", "28", 2_500)])
    out += alerts.process([dtc("P0301", "2F", 3_000), dtc("P0301", "2E", 4_000), dtc("P0301", "2E", 5_000)])
    out += alerts.process([dtc("P0301", "09", 6_000)])
    assert [(a["event"], a["alert_id"], a["ended_ms"]) for a in out] == [
        ("fired", "dtc:P0301:veh-1:1000", None), ("resolved", "dtc:P0301:veh-1:1000", 4_000),
        ("fired", "dtc:P0301:veh-1:6000", None)]
    assert {a["severity"] for a in out} == {"critical"} and out[0]["kind"] == "dtc"
    assert alerts.active_dtcs() == ["P0301"]


def test_dtc_resolves_after_silence_and_state_survives_a_restart() -> None:
    settings_ = DtcAlertSettings(silence_ms=60_000)
    alerts = DtcAlerts("veh-1", settings_)
    alerts.process([dtc("B19B0-49", "2F", 0), dtc("B19B0-49", "2F", 30_000)])
    alerts = DtcAlerts.from_dict(json.loads(json.dumps(alerts.to_dict())), settings_)
    assert alerts.sweep(80_000) == []
    (resolved,) = alerts.sweep(90_000)
    assert resolved["event"] == "resolved" and resolved["ended_ms"] == 90_000
    assert resolved["alert_id"] == "dtc:B19B0-49:veh-1:0"


def test_alerts_are_alert_records() -> None:
    rule = AlertRule(rule_id="r", channel="c", comparator=">=", threshold=1.0)
    threshold = ThresholdAlerts("k", "c", [rule]).process([1, 2], [1.0, 0.0]).alerts
    dtcs = DtcAlerts("k").process([dtc("P0301", "zz", 1), dtc("P0301", "00", 2)])
    assert len(threshold) == 2 and len(dtcs) == 2
    for alert in threshold + dtcs:
        assert codec.decode(codec.encode("alert", alert), "alert") == alert
