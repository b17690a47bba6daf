"""KPI periods close by watermark; a clock jump does not emit a record for every empty period in between."""

from __future__ import annotations

import numpy as np

from fleetstream.config import StreamsSettings
from fleetstream.streams.analytics import AnalyticsConfig, KeyStage

PERIOD_MS = 300_000


def feed(stage: KeyStage, times_ms: list[int]) -> list[dict]:
    ts = np.array(times_ms, dtype=np.int64)
    out = stage.samples({"fleet_id": "42"}, "EngineSpeed", ts, np.full(ts.size, 900.0),
                        np.zeros(ts.size, dtype=np.int64), now_ms=0, wall_s=0.0, dyno=False)
    return out.kpis


def test_a_clock_jump_of_years_closes_one_period_not_millions():
    stage = KeyStage(AnalyticsConfig.from_settings(StreamsSettings()), "1001")
    assert feed(stage, [584_934_000]) == []  # 1970-01-07: a device clock at the epoch
    kpis = feed(stage, [1_764_000_000_000])  # 2025
    periods = {(k["period_start_ms"], k["period_end_ms"]) for k in kpis}
    assert periods == {(584_934_000 // PERIOD_MS * PERIOD_MS, 584_934_000 // PERIOD_MS * PERIOD_MS + PERIOD_MS)}
    assert stage.period_start_ms is not None and stage.period_start_ms > 1_763_000_000_000


def test_consecutive_periods_each_close_once_with_their_samples():
    stage = KeyStage(AnalyticsConfig.from_settings(StreamsSettings()), "1001")
    start = 1_764_000_000_000 // PERIOD_MS * PERIOD_MS
    feed(stage, [start + i * 1_000 for i in range(10)])
    closed = feed(stage, [start + PERIOD_MS + 20_000])  # watermark passes the first period's end
    health = [k for k in closed if k["name"] == "health_score"]
    assert [(k["period_start_ms"], k["dimensions"]["fleet_id"]) for k in health] == [(start, "42")]
    assert feed(stage, [start + PERIOD_MS + 30_000]) == []  # nothing closes twice


def run_kpis(power_unit: str) -> list[dict]:
    """A 3 s pull at 50 hp / 3000 rpm on one station, then the power drops: the run's KPI records."""
    stage = KeyStage(AnalyticsConfig.from_settings(StreamsSettings()), "cell-1")
    start = 1_764_000_000_000
    ts = np.array([start + 100 * i for i in range(32)], dtype=np.int64)
    power = np.where(np.arange(32) < 31, 50.0, 0.0)
    kpis: list[dict] = []
    for channel, unit, values in (("engine_speed", "rpm", np.full(32, 3000.0)), ("power", power_unit, power)):
        out = stage.samples({"unit": unit, "run_id": "r1"}, channel, ts, values, np.zeros(32, dtype=np.int64),
                            now_ms=0, wall_s=0.0, dyno=True)
        kpis += [k for k in out.kpis if k["scope"] == "run"]
    return kpis


def test_dyno_run_kpis_never_use_a_channel_of_unknown_unit():
    # A WinPEP 8 power channel whose unit the file does not declare for certain is published as
    # unknown(code=4,sub=1): its numbers may be kW, so no peak_hp (in hp) is computed from them.
    assert {k["name"]: k["value"] for k in run_kpis("hp")}["peak_hp"] == 50.0
    assert run_kpis("unknown(code=4,sub=1)") == []


def test_an_acknowledgement_from_the_read_api_sets_the_time_to_acknowledge():
    stage = KeyStage(AnalyticsConfig.from_settings(StreamsSettings()), "1001")
    start = 1_764_000_000_000 // PERIOD_MS * PERIOD_MS
    feed(stage, [start + 1_000])
    stage.alerts([{"alert_id": "a1", "event": "fired", "severity": "critical", "started_ms": start + 10_000,
                   "ended_ms": None}])
    stage.acknowledgement({"alert_id": "a1", "acked_ms": start + 70_000})
    stage.acknowledgement({"alert_id": "a1", "acked_ms": start + 90_000})  # a second person: the first counts
    restored = KeyStage(stage.config, "1001", stage.to_dict())  # the state survives its changelog
    kpis = {k["name"]: k["value"] for k in feed(restored, [start + PERIOD_MS + 20_000])}
    assert kpis["mean_time_to_ack_ms"] == 60_000.0
    assert kpis["alerts_unacknowledged"] == 0
