"""KPI formulas per vehicle, per fleet and per dyno run, as plain functions over batches of plain data.

Every KPI leaves as a kpi/v1 dict (`kpi_record`). The definitions, so that a number on a dashboard can be
recomputed by hand:

- **health_score** (0..100, vehicle): ``100 - min(40, 20 * active critical threshold alerts)
  - min(20, 5 * active warning threshold alerts) - min(20, 5 * active DTC episodes)
  - 10 * (fraction of the period's samples flagged outside their warning range) - 10 if stale``, clamped to
  0..100. *Active* means at the period end. *Stale*: no sample in the last ``stale_after_ms`` (15 min) before
  the period end. The caps add up to 100, so each cause can cost at most its share. Weights are
  `HealthWeights`. Bands: excellent >= 90, good >= 75, fair >= 50, poor >= 25, else critical.
  Fleet: the mean over its vehicles, plus the count of vehicles per band.
- **uptime_pct** (vehicle): the share of the period covered by data, where each sample at ``t`` covers
  ``[t, t + max_gap_ms)`` (default 60 s): 100 * measure(union of covered intervals within the period) /
  period length. Pass only the samples that mean "up" (e.g. locations with the engine On or Idle, or any
  telemetry). Fleet: the mean over its vehicles (so 50 % = half the fleet's vehicle-time was up).
- **alerts_fired** (count, dimension severity): fired events with started_ms in the period.
  **mean_time_to_ack_ms**: over those alerts that were acknowledged, mean of ``ack_ms - started_ms``,
  where ``ack_ms`` is the earliest of an explicit acknowledgement (alert_id → time, from the backend) and
  the episode's resolved event (a resolved alert needs no more attention). Unacknowledged alerts are counted
  in **alerts_unacknowledged**. Fleet: sums, and the mean over all acknowledged alerts of the fleet.
- **network_match_rate** (ratio 0..1): sum(matched_messages) / sum(total_messages) over the period's
  network stats, i.e. weighted by message count, not a mean of rates; absent when no messages.
- **distance_mi**: haversine distance (mean Earth radius 3958.7613 mi) between consecutive locations in
  event-time order. **idle_time_s**: time from a location to the next (each step capped at ``max_gap_ms``)
  while the location says the engine idles: engine_state ``Idle``, or ``On`` with speed_mph < 1.
- **dyno runs**: see `RunDetection`; per run peak_hp and peak_torque_ftlb with the rpm at each
  (``rpm_at_peak_hp``, ``rpm_at_peak_torque``), and afr_min / afr_mean / afr_max over the run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "EARTH_RADIUS_MI",
    "AlertStats",
    "DynoRunTracker",
    "HealthInputs",
    "HealthWeights",
    "LocationTotals",
    "RunDetection",
    "RunSummary",
    "VehicleKpis",
    "alert_stats",
    "detect_runs",
    "fleet_records",
    "haversine_mi",
    "health_band",
    "health_score",
    "kpi_record",
    "network_match_rate",
    "out_of_range_count",
    "run_records",
    "summarise_run",
    "uptime_pct",
    "vehicle_records",
]

EARTH_RADIUS_MI = 3958.7613
WARNING_FLAGS = 1 | 2  # validation: below / above the warning range
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def kpi_record(scope: str, scope_id: str, name: str, value: float, unit: str, period_start_ms: int,
               period_end_ms: int, computed_at_ms: int, dimensions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One kpi/v1 record."""
    return {"scope": scope, "scope_id": scope_id, "name": name, "value": float(value), "unit": unit,
            "period_start_ms": period_start_ms, "period_end_ms": period_end_ms,
            "dimensions": dict(dimensions or {}), "computed_at_ms": computed_at_ms}


# ---------------------------------------------------------------------------- health


@dataclass(frozen=True)
class HealthWeights:
    critical_per_alert: float = 20.0
    critical_cap: float = 40.0
    warning_per_alert: float = 5.0
    warning_cap: float = 20.0
    dtc_per_code: float = 5.0
    dtc_cap: float = 20.0
    out_of_range_max: float = 10.0
    stale: float = 10.0
    stale_after_ms: int = 900_000


@dataclass(frozen=True)
class HealthInputs:
    """What a vehicle's health score depends on, for one period."""

    period_end_ms: int
    active_critical_alerts: int = 0
    active_warning_alerts: int = 0
    active_dtcs: int = 0
    samples_total: int = 0
    samples_out_of_range: int = 0
    last_data_ms: int | None = None


def out_of_range_count(flags: npt.ArrayLike) -> int:
    """Samples flagged by validation as outside their warning range (flag bits 1 and 2)."""
    return int(np.count_nonzero(np.asarray(flags, dtype=np.int64) & WARNING_FLAGS))


def health_score(inputs: HealthInputs, weights: HealthWeights = HealthWeights()) -> float:
    """The documented 0..100 score: 100 minus capped penalties."""
    penalty = min(weights.critical_cap, weights.critical_per_alert * inputs.active_critical_alerts)
    penalty += min(weights.warning_cap, weights.warning_per_alert * inputs.active_warning_alerts)
    penalty += min(weights.dtc_cap, weights.dtc_per_code * inputs.active_dtcs)
    if inputs.samples_total > 0:
        penalty += weights.out_of_range_max * inputs.samples_out_of_range / inputs.samples_total
    stale = inputs.last_data_ms is None or inputs.period_end_ms - inputs.last_data_ms > weights.stale_after_ms
    penalty += weights.stale if stale else 0.0
    return min(100.0, max(0.0, 100.0 - penalty))


def health_band(score: float) -> str:
    for floor, band in ((90.0, "excellent"), (75.0, "good"), (50.0, "fair"), (25.0, "poor")):
        if score >= floor:
            return band
    return "critical"


# ---------------------------------------------------------------------------- uptime


def uptime_pct(timestamps_ms: npt.ArrayLike, period_start_ms: int, period_end_ms: int,
               max_gap_ms: int = 60_000) -> float:
    """Percent of [start, end) covered by the union of [t, t + max_gap_ms) over the samples."""
    if period_end_ms <= period_start_ms:
        raise ValueError("empty period")
    ts = np.unique(np.asarray(timestamps_ms, dtype=np.int64))
    if ts.size == 0:
        return 0.0
    next_ts = np.append(ts[1:], np.iinfo(np.int64).max)
    # Up to the next sample each interval is disjoint from the others, and the next one covers beyond it.
    covered_from = np.maximum(ts, period_start_ms)
    covered_to = np.minimum(np.minimum(ts + max_gap_ms, next_ts), period_end_ms)
    covered_ms = int(np.clip(covered_to - covered_from, 0, None).sum())
    return 100.0 * covered_ms / (period_end_ms - period_start_ms)


# ---------------------------------------------------------------------------- alerts


@dataclass
class AlertStats:
    fired_by_severity: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    unacknowledged: int = 0
    time_to_ack_sum_ms: int = 0

    @property
    def fired(self) -> int:
        return sum(self.fired_by_severity.values())

    @property
    def mean_time_to_ack_ms(self) -> float | None:
        return self.time_to_ack_sum_ms / self.acknowledged if self.acknowledged else None

    def merge(self, other: AlertStats) -> AlertStats:
        severities = Counter(self.fired_by_severity) + Counter(other.fired_by_severity)
        return AlertStats(dict(severities), self.acknowledged + other.acknowledged,
                          self.unacknowledged + other.unacknowledged,
                          self.time_to_ack_sum_ms + other.time_to_ack_sum_ms)


def alert_stats(alerts: Sequence[Mapping[str, Any]], acks_ms: Mapping[str, int], period_start_ms: int,
                period_end_ms: int) -> AlertStats:
    """Counts and time to acknowledge of the episodes that started in the period (alert/v1 dicts in)."""
    resolved_ms = {a["alert_id"]: int(a["ended_ms"]) for a in alerts
                   if a["event"] == "resolved" and a.get("ended_ms") is not None}
    stats = AlertStats()
    fired = {a["alert_id"]: a for a in alerts
             if a["event"] == "fired" and period_start_ms <= a["started_ms"] < period_end_ms}
    for alert_id, alert in fired.items():
        stats.fired_by_severity[alert["severity"]] = stats.fired_by_severity.get(alert["severity"], 0) + 1
        candidates = [t for t in (acks_ms.get(alert_id), resolved_ms.get(alert_id)) if t is not None]
        if candidates:
            stats.acknowledged += 1
            stats.time_to_ack_sum_ms += max(0, min(candidates) - int(alert["started_ms"]))
        else:
            stats.unacknowledged += 1
    return stats


# ---------------------------------------------------------------------------- network


def network_match_rate(network_stats: Sequence[Mapping[str, Any]]) -> tuple[int, int, float | None]:
    """(sum matched, sum total, matched/total or None when no messages) over network_stats/v1 records."""
    matched = sum(int(s["matched_messages"]) for s in network_stats)
    total = sum(int(s["total_messages"]) for s in network_stats)
    return matched, total, (matched / total if total > 0 else None)


# ---------------------------------------------------------------------------- locations


def haversine_mi(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike,
                 lon2: npt.ArrayLike) -> FloatArray:
    """Great-circle distance in miles, element-wise, on a sphere of the mean Earth radius."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi, dlambda = phi2 - phi1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_MI * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64)


def _is_idle(location: Mapping[str, Any]) -> bool:
    state = location.get("engine_state")
    speed = location.get("speed_mph")
    return state == "Idle" or (state == "On" and speed is not None and speed < 1.0)


@dataclass
class LocationTotals:
    """Distance and idle time of one vehicle, accumulated over location batches in event-time order.

    Keeps the last location, so a step that spans two batches counts once; a location older than the last one
    is skipped (counted in ``skipped``). The step from location i to i+1 is attributed to the totals at the
    time location i+1 arrives.
    """

    max_gap_ms: int = 300_000
    distance_mi: float = 0.0
    idle_ms: int = 0
    skipped: int = 0
    last: dict[str, Any] | None = None

    def add(self, locations: Sequence[Mapping[str, Any]]) -> None:
        ordered = sorted(locations, key=lambda loc: int(loc["timestamp_ms"]))
        if self.last is not None:
            fresh = [loc for loc in ordered if int(loc["timestamp_ms"]) >= int(self.last["timestamp_ms"])]
            self.skipped += len(ordered) - len(fresh)
            ordered = [self.last, *fresh]
        if not ordered:
            return
        lat = np.array([loc["latitude"] for loc in ordered], dtype=np.float64)
        lon = np.array([loc["longitude"] for loc in ordered], dtype=np.float64)
        ts = np.array([loc["timestamp_ms"] for loc in ordered], dtype=np.int64)
        self.distance_mi += float(haversine_mi(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum())
        idle = np.array([_is_idle(loc) for loc in ordered[:-1]], dtype=np.bool_)
        self.idle_ms += int(np.minimum(np.diff(ts), self.max_gap_ms)[idle].sum())
        self.last = {k: ordered[-1].get(k) for k in ("timestamp_ms", "latitude", "longitude", "engine_state",
                                                       "speed_mph")}

    def reset_totals(self) -> None:
        """Start a new period, keeping the last location so the next step still counts."""
        self.distance_mi, self.idle_ms, self.skipped = 0.0, 0, 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocationTotals:
        return cls(**data)


# ---------------------------------------------------------------------------- vehicle and fleet records


@dataclass
class VehicleKpis:
    """One vehicle's KPI values for one period (any of them may be unknown)."""

    vehicle_id: str
    health_score: float | None = None
    uptime_pct: float | None = None
    alerts: AlertStats | None = None
    network_matched: int = 0
    network_total: int = 0
    distance_mi: float | None = None
    idle_time_s: float | None = None


def _common_records(scope: str, scope_id: str, kpis: VehicleKpis, period: tuple[int, int],
                    computed_at_ms: int) -> list[dict[str, Any]]:
    def record(name: str, value: float, unit: str, dims: Mapping[str, str] | None = None) -> dict[str, Any]:
        return kpi_record(scope, scope_id, name, value, unit, period[0], period[1], computed_at_ms, dims)

    out = []
    if kpis.health_score is not None:
        out.append(record("health_score", kpis.health_score, "score"))
    if kpis.uptime_pct is not None:
        out.append(record("uptime_pct", kpis.uptime_pct, "%"))
    if kpis.alerts is not None:
        for severity, count in sorted(kpis.alerts.fired_by_severity.items()):
            out.append(record("alerts_fired", count, "count", {"severity": severity}))
        out.append(record("alerts_unacknowledged", kpis.alerts.unacknowledged, "count"))
        if kpis.alerts.mean_time_to_ack_ms is not None:
            out.append(record("mean_time_to_ack_ms", kpis.alerts.mean_time_to_ack_ms, "ms"))
    if kpis.network_total > 0:
        out.append(record("network_match_rate", kpis.network_matched / kpis.network_total, "ratio"))
        out.append(record("network_messages_total", kpis.network_total, "count"))
    if kpis.distance_mi is not None:
        out.append(record("distance_mi", kpis.distance_mi, "mi"))
    if kpis.idle_time_s is not None:
        out.append(record("idle_time_s", kpis.idle_time_s, "s"))
    return out


def vehicle_records(kpis: VehicleKpis, period_start_ms: int, period_end_ms: int,
                    computed_at_ms: int) -> list[dict[str, Any]]:
    """The kpi/v1 records of one vehicle's period."""
    return _common_records("vehicle", kpis.vehicle_id, kpis, (period_start_ms, period_end_ms), computed_at_ms)


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def fleet_records(fleet_id: str, vehicles: Sequence[VehicleKpis], period_start_ms: int, period_end_ms: int,
                  computed_at_ms: int) -> list[dict[str, Any]]:
    """Fleet KPIs: means of scores and uptime, sums of counts, distance and idle, weighted match rate."""
    scores = [v.health_score for v in vehicles if v.health_score is not None]
    alert_parts = [v.alerts for v in vehicles if v.alerts is not None]
    distances = [v.distance_mi for v in vehicles if v.distance_mi is not None]
    idles = [v.idle_time_s for v in vehicles if v.idle_time_s is not None]
    fleet = VehicleKpis(
        vehicle_id=fleet_id,
        health_score=_mean(scores),
        uptime_pct=_mean([v.uptime_pct for v in vehicles if v.uptime_pct is not None]),
        alerts=reduce(AlertStats.merge, alert_parts) if alert_parts else None,
        network_matched=sum(v.network_matched for v in vehicles),
        network_total=sum(v.network_total for v in vehicles),
        distance_mi=math.fsum(distances) if distances else None,
        idle_time_s=math.fsum(idles) if idles else None,
    )
    period = (period_start_ms, period_end_ms)
    out = _common_records("fleet", fleet_id, fleet, period, computed_at_ms)
    out.append(kpi_record("fleet", fleet_id, "vehicles", len(vehicles), "count", *period, computed_at_ms))
    bands = Counter(health_band(score) for score in scores)
    for band in ("excellent", "good", "fair", "poor", "critical"):
        out.append(kpi_record("fleet", fleet_id, "vehicles_by_health_band", bands[band], "count", *period,
                              computed_at_ms, {"band": band}))
    return out


# ---------------------------------------------------------------------------- dyno runs


@dataclass(frozen=True)
class RunDetection:
    """A dyno run is a maximal stretch of power samples (in event-time order) all >= ``power_threshold_hp``,
    with no two consecutive ones more than ``max_gap_ms`` apart, lasting at least ``min_duration_ms`` from its
    first to its last sample. A pull on an inertia or load dyno is exactly such a stretch; coasting, idling
    and the gaps between pulls fall below the threshold. ``channel_wait_ms``: how far past a run's end the
    live tracker waits for slower channels (rpm, torque, AFR) before summarising without their tail."""

    power_threshold_hp: float = 10.0
    min_duration_ms: int = 2_000
    max_gap_ms: int = 1_000
    channel_wait_ms: int = 5_000


def detect_runs(timestamps_ms: npt.ArrayLike, power_hp: npt.ArrayLike,
                detection: RunDetection = RunDetection()) -> list[tuple[int, int]]:
    """(first, last) sample time of each run in a power series (any order in, runs in time order out)."""
    ts = np.asarray(timestamps_ms, dtype=np.int64).reshape(-1)
    hp = np.asarray(power_hp, dtype=np.float64).reshape(-1)
    order = np.argsort(ts, kind="stable")
    ts, hp = ts[order], hp[order]
    above = np.flatnonzero(hp >= detection.power_threshold_hp)
    if above.size == 0:
        return []
    breaks = (np.diff(above) != 1) | (np.diff(ts[above]) > detection.max_gap_ms)
    starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
    ends = np.concatenate([np.flatnonzero(breaks), [above.size - 1]])
    runs = [(int(ts[above[s]]), int(ts[above[e]])) for s, e in zip(starts, ends, strict=True)]
    return [(a, b) for a, b in runs if b - a >= detection.min_duration_ms]


@dataclass
class RunSummary:
    start_ms: int
    end_ms: int
    peak_hp: float
    rpm_at_peak_hp: float | None
    peak_torque_ftlb: float | None
    rpm_at_peak_torque: float | None
    afr_min: float | None = None
    afr_mean: float | None = None
    afr_max: float | None = None


Series = tuple[npt.ArrayLike, npt.ArrayLike]


def _sorted_in(series: Series | None, start_ms: int, end_ms: int) -> tuple[IntArray, FloatArray]:
    if series is None:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    ts = np.asarray(series[0], dtype=np.int64).reshape(-1)
    values = np.asarray(series[1], dtype=np.float64).reshape(-1)
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    inside = (ts >= start_ms) & (ts <= end_ms)
    return ts[inside], values[inside]


def _rpm_at(rpm: tuple[IntArray, FloatArray], time_ms: int) -> float | None:
    """Engine speed at a time: linear interpolation between the neighbouring rpm samples (nearest at the ends)."""
    if rpm[0].size == 0:
        return None
    return float(np.interp(time_ms, rpm[0], rpm[1]))


def summarise_run(start_ms: int, end_ms: int, channels: Mapping[str, Series]) -> RunSummary:
    """Peaks and AFR statistics of one run from the station's channel series (power, torque, engine_speed, afr).

    Without a torque channel, torque is derived from power and rpm: ft-lb = hp * 5252 / rpm.
    """
    power = _sorted_in(channels.get("power"), start_ms, end_ms)
    if power[0].size == 0:
        raise ValueError("a run needs power samples")
    rpm = _sorted_in(channels.get("engine_speed"), start_ms, end_ms)
    peak = int(np.argmax(power[1]))
    peak_hp_ms = int(power[0][peak])
    torque = _sorted_in(channels.get("torque"), start_ms, end_ms)
    if torque[0].size == 0 and rpm[0].size:
        rpm_at_power = np.interp(power[0], rpm[0], rpm[1])
        usable = rpm_at_power > 0
        torque = (power[0][usable], power[1][usable] * 5252.0 / rpm_at_power[usable])
    summary = RunSummary(start_ms, end_ms, float(power[1][peak]), _rpm_at(rpm, peak_hp_ms), None, None)
    if torque[0].size:
        peak_t = int(np.argmax(torque[1]))
        summary.peak_torque_ftlb = float(torque[1][peak_t])
        summary.rpm_at_peak_torque = _rpm_at(rpm, int(torque[0][peak_t]))
    afr = _sorted_in(channels.get("afr"), start_ms, end_ms)[1]
    if afr.size:
        summary.afr_min, summary.afr_max = float(afr.min()), float(afr.max())
        summary.afr_mean = math.fsum(afr.tolist()) / afr.size
    return summary


_RUN_UNITS = {"peak_hp": "hp", "rpm_at_peak_hp": "rpm", "peak_torque_ftlb": "ft-lb", "rpm_at_peak_torque": "rpm",
              "afr_min": "AFR", "afr_mean": "AFR", "afr_max": "AFR"}


def run_records(summary: RunSummary, station_id: str, run_id: str, computed_at_ms: int) -> list[dict[str, Any]]:
    """kpi/v1 records of one run (scope run, scope_id the run id or ``station:start``), one per known value."""
    scope_id = run_id or f"{station_id}:{summary.start_ms}"
    values = asdict(summary)
    return [kpi_record("run", scope_id, name, values[name], unit, summary.start_ms, summary.end_ms, computed_at_ms,
                       {"station_id": station_id})
            for name, unit in _RUN_UNITS.items() if values[name] is not None]


class DynoRunTracker:
    """Run detection over a live station stream whose channels arrive as separate batches.

    Buffers each channel's samples since the start of the current candidate run. A run is complete once the
    power channel has moved ``max_gap_ms`` past its last sample (or shows a sample below the threshold after
    it) and every other buffered channel has data up to its end; then it is summarised, and samples up to its
    end are dropped. The channels waited for are ``expected_channels`` plus every channel seen so far, each at
    most ``channel_wait_ms`` past the run's end. Memory is the samples of one run plus ``max_gap_ms`` per
    channel. Samples older than the last completed run are dropped as stale.
    """

    def __init__(self, station_id: str, detection: RunDetection = RunDetection(),
                 expected_channels: Sequence[str] = ("engine_speed",)) -> None:
        self.station_id = station_id
        self.detection = detection
        self.expected_channels = tuple(expected_channels)
        self.done_up_to_ms: int | None = None
        self._series: dict[str, tuple[list[int], list[float]]] = {}

    def process(self, channel: str, timestamps_ms: npt.ArrayLike, values: npt.ArrayLike) -> list[RunSummary]:
        ts = np.asarray(timestamps_ms, dtype=np.int64).reshape(-1)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if self.done_up_to_ms is not None:
            fresh = ts > self.done_up_to_ms
            ts, vals = ts[fresh], vals[fresh]
        old_ts, old_vals = self._series.get(channel, ([], []))
        all_ts = np.concatenate([np.asarray(old_ts, dtype=np.int64), ts])
        all_vals = np.concatenate([np.asarray(old_vals, dtype=np.float64), vals])
        order = np.argsort(all_ts, kind="stable")
        self._series[channel] = (all_ts[order].tolist(), all_vals[order].tolist())
        return self._complete_runs(flush=False)

    def flush(self) -> list[RunSummary]:
        """Summarise a run still in progress (end of a file, shutdown)."""
        return self._complete_runs(flush=True)

    def _complete_runs(self, flush: bool) -> list[RunSummary]:
        power_ts, power_hp = self._series.get("power", ([], []))
        if not power_ts:
            return []
        summaries = []
        pending_start_ms: int | None = None
        for start_ms, end_ms in detect_runs(power_ts, power_hp, self.detection):
            if not flush and not self._is_complete(end_ms):
                pending_start_ms = start_ms
                break
            summaries.append(summarise_run(start_ms, end_ms, self._series))
            self.done_up_to_ms = end_ms
        self._trim(pending_start_ms)
        return summaries

    def _is_complete(self, end_ms: int) -> bool:
        power_ts, power_hp = self._series["power"]
        after = [hp for t, hp in zip(power_ts, power_hp, strict=True) if t > end_ms]
        power_done = power_ts[-1] - end_ms > self.detection.max_gap_ms or bool(
            after and after[0] < self.detection.power_threshold_hp)
        waited_for = set(self.expected_channels) | set(self._series)
        others_done = all(self._series.get(name, ([], []))[0][-1:] >= [end_ms] for name in waited_for)
        waited_enough = power_ts[-1] - end_ms > self.detection.channel_wait_ms
        return power_done and (others_done or waited_enough)

    def _trim(self, pending_start_ms: int | None) -> None:
        """Drop what no future run can use: everything before the run waiting for its channels, or else
        before the stretch above threshold at the head of the power series."""
        power_ts, power_hp = self._series["power"]
        keep_from = self._candidate_start(power_ts, power_hp)
        if pending_start_ms is not None:
            keep_from = min(keep_from, pending_start_ms)
        keep_from -= self.detection.max_gap_ms
        if self.done_up_to_ms is not None:
            keep_from = max(keep_from, self.done_up_to_ms + 1)
        for name, (ts, vals) in list(self._series.items()):
            first = int(np.searchsorted(np.asarray(ts, dtype=np.int64), keep_from))
            self._series[name] = (ts[first:], vals[first:])

    def _candidate_start(self, power_ts: list[int], power_hp: list[float]) -> int:
        """Start of the stretch above threshold that ends at the latest power sample (its time if none)."""
        start = power_ts[-1]
        for i in range(len(power_ts) - 1, -1, -1):
            if power_hp[i] < self.detection.power_threshold_hp:
                break
            if i < len(power_ts) - 1 and power_ts[i + 1] - power_ts[i] > self.detection.max_gap_ms:
                break
            start = power_ts[i]
        return start

    def to_dict(self) -> dict[str, Any]:
        return {"station_id": self.station_id, "detection": asdict(self.detection),
                "expected_channels": list(self.expected_channels),
                "done_up_to_ms": self.done_up_to_ms,
                "series": {name: [ts, vals] for name, (ts, vals) in self._series.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DynoRunTracker:
        tracker = cls(data["station_id"], RunDetection(**data["detection"]), data["expected_channels"])
        tracker.done_up_to_ms = data["done_up_to_ms"]
        tracker._series = {name: (list(ts), list(vals)) for name, (ts, vals) in data["series"].items()}
        return tracker
