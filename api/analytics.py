"""What the dashboards and metric endpoints say, as scoped SQL over the pipeline's tables.

Every function takes the `ScopedReader`, the caller and a `DateRange` and returns plain JSON-ready data;
the numbers come from the KPIs the streams computed (`streams/kpis.py` defines them), the alert events,
the acknowledgements, DTCs, samples rollups and dead letters. Health scores are stored 0..100 and shown
0..1 as seed 003's `average_health_score` is (the division is the only change). Bands are the streams':
excellent >= 90, good >= 75, fair >= 50, poor >= 25, else critical.

Time to acknowledge follows the KPI's definition: the earliest of an explicit acknowledgement
(`alert_acks`) and the episode's resolution; resolution time is fired → resolved.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fleetstream.api.rbac import Principal
from fleetstream.api.scoped import ScopedReader

__all__ = ["BANDS", "DateRange", "HealthScores", "alert_stats", "dyno_run", "dyno_runs", "executive_dashboard",
           "fleet_dashboard", "fleet_health", "health_by_vehicle", "health_scores", "health_trend", "owner_dashboard",
           "technician_dashboard", "uptime", "vehicle_channels", "vehicle_exists", "window_series"]

BANDS = ("excellent", "good", "fair", "poor", "critical")
_BAND = "multiIf(health >= 90, 'excellent', health >= 75, 'good', health >= 50, 'fair', health >= 25, 'poor', " \
        "'critical')"
_FROM, _TO = "{from:DateTime64(3)}", "{to:DateTime64(3)}"


@dataclass(frozen=True)
class DateRange:
    """A half-open UTC range [start, end)."""

    start: dt.datetime
    end: dt.datetime

    def params(self) -> dict[str, Any]:
        fmt = "%Y-%m-%d %H:%M:%S.%f"
        return {"from": self.start.strftime(fmt)[:-3], "to": self.end.strftime(fmt)[:-3]}

    def as_dict(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


_HEALTH_PERIODS = f"""
    FROM @kpis WHERE scope = 'vehicle' AND name = 'health_score' AND period_end > {_FROM} AND period_end <= {_TO}"""

_HEALTH_BY_VEHICLE_AND_DAY = f"""
    SELECT vehicle_id, argMax(last_value, last_end) AS health, {_BAND} AS band,
           groupArray((day, total, periods)) AS days
    FROM (SELECT vehicle_id, toDate(period_end) AS day, sum(value) AS total, count() AS periods,
                 argMax(value, period_end) AS last_value, max(period_end) AS last_end
          {_HEALTH_PERIODS}
          GROUP BY vehicle_id, day)
    GROUP BY vehicle_id ORDER BY vehicle_id"""


@dataclass(frozen=True)
class HealthScores:
    """Each vehicle's latest health score in the range (0..100) with its band, and the daily trend."""

    vehicles: list[dict[str, Any]]
    trend: list[dict[str, Any]]
    """Per UTC day of the range: mean health score of the day's periods and how many vehicles had one."""


def health_scores(reader: ScopedReader, who: Principal, rng: DateRange) -> HealthScores:
    """The vehicles' latest scores and the daily trend from one read of the health KPIs.

    Both come from the same rows, which are most of a dashboard's work: one scan grouped by vehicle and day
    gives each vehicle's last score (the last of its days' last scores) and each day's sum, count and
    vehicles, instead of one scan for each."""
    rows = reader.rows(_HEALTH_BY_VEHICLE_AND_DAY, rng.params(), who)
    days: dict[str, list[float]] = {}
    for row in rows:
        for day, total, periods in row.pop("days"):
            acc = days.setdefault(day, [0.0, 0, 0])
            acc[0] += total
            acc[1] += periods
            acc[2] += 1
    trend = [{"day": day, "mean_health": total / periods, "vehicles": vehicles}
             for day, (total, periods, vehicles) in sorted(days.items())]
    return HealthScores(rows, trend)


def health_by_vehicle(reader: ScopedReader, who: Principal, rng: DateRange) -> list[dict[str, Any]]:
    """Each vehicle's latest health score in the range (0..100) and its band."""
    sql = f"SELECT vehicle_id, argMax(value, period_end) AS health, {_BAND} AS band {_HEALTH_PERIODS} " \
          "GROUP BY vehicle_id ORDER BY vehicle_id"
    return reader.rows(sql, rng.params(), who)


def _distribution(vehicles: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(BANDS, 0)
    for v in vehicles:
        counts[v["band"]] += 1
    return counts


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def health_trend(reader: ScopedReader, who: Principal, rng: DateRange) -> list[dict[str, Any]]:
    """Mean vehicle health score (0..100) per UTC day of the range."""
    return health_scores(reader, who, rng).trend


def fleet_health(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    scores = health_scores(reader, who, rng)
    vehicles = scores.vehicles
    mean = _mean([v["health"] for v in vehicles])
    return {"range": rng.as_dict(), "vehicles_scored": len(vehicles),
            "average_health_score": None if mean is None else mean / 100,
            "health_distribution": _distribution(vehicles),
            "needs_attention": [v["vehicle_id"] for v in vehicles if v["band"] in ("poor", "critical")],
            "trend": scores.trend, "vehicles": vehicles}


def uptime(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    vehicles = reader.rows(f"""
        SELECT vehicle_id, avg(value) AS uptime_pct, count() AS periods
        FROM @kpis WHERE scope = 'vehicle' AND name = 'uptime_pct' AND period_end > {_FROM} AND period_end <= {_TO}
        GROUP BY vehicle_id ORDER BY vehicle_id""", rng.params(), who)
    return {"range": rng.as_dict(), "fleet_uptime_pct": _mean([v["uptime_pct"] for v in vehicles]),
            "vehicles": vehicles}


_EPISODES = f"""
    SELECT e.alert_id AS alert_id, e.key AS vehicle_id, e.severity AS severity, e.started_at AS started_at,
           e.resolved_at AS resolved_at, nullIf(k.acked_at, toDateTime64(0, 3, 'UTC')) AS acked_at
    FROM (SELECT alert_id, any(key) AS key, any(severity) AS severity, min(started) AS started_at,
                 minIf(ended, event = 'resolved') AS resolved_at
          FROM @alerts GROUP BY alert_id HAVING started_at >= {_FROM} AND started_at < {_TO}) AS e
    LEFT JOIN (SELECT alert_id, min(acked_at) AS acked_at FROM @alert_acks GROUP BY alert_id) AS k
    ON e.alert_id = k.alert_id"""


def alert_stats(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    by_severity = reader.rows(f"""
        SELECT severity, count() AS alerts,
               countIf(ack IS NOT NULL) AS acknowledged, countIf(ack IS NULL) AS unacknowledged,
               avgIf(dateDiff('millisecond', started_at, ack), ack IS NOT NULL) AS mean_time_to_ack_ms,
               countIf(resolved_at IS NOT NULL) AS resolved,
               avgIf(dateDiff('millisecond', started_at, resolved_at), resolved_at IS NOT NULL)
                   AS mean_resolution_ms,
               countIf(acked_at IS NOT NULL) AS acknowledged_by_people
        FROM (SELECT *, if(acked_at IS NULL, resolved_at,
                           if(resolved_at IS NULL, acked_at, least(acked_at, resolved_at))) AS ack
              FROM ({_EPISODES}))
        GROUP BY severity ORDER BY severity""", rng.params(), who)
    for row in by_severity:
        for name in ("mean_time_to_ack_ms", "mean_resolution_ms"):
            if row[name] is not None and row[name] != row[name]:  # avgIf over no rows is nan
                row[name] = None
    return {"range": rng.as_dict(), "total": _totals(by_severity), "by_severity": by_severity}


def _weighted(rows: list[dict[str, Any]], mean: str, weight: str) -> float | None:
    pairs = [(r[mean], r[weight]) for r in rows if r[mean] is not None and r[weight]]
    total = sum(w for _, w in pairs)
    return sum(m * w for m, w in pairs) / total if total else None


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(r[k] for r in rows) for k in ("alerts", "acknowledged", "unacknowledged",
                                                                 "resolved", "acknowledged_by_people")}
    out["mean_time_to_ack_ms"] = _weighted(rows, "mean_time_to_ack_ms", "acknowledged")
    out["mean_resolution_ms"] = _weighted(rows, "mean_resolution_ms", "resolved")
    return out


def recent_alerts(reader: ScopedReader, who: Principal, rng: DateRange, limit: int = 20,
                  open_only: bool = False) -> list[dict[str, Any]]:
    having = "HAVING resolved_at IS NULL" if open_only else ""
    return reader.rows(f"""
        SELECT alert_id, any(key) AS vehicle_id, any(channel) AS channel, any(rule_id) AS rule_id,
               any(severity) AS severity, min(started) AS started_at, minIf(ended, event = 'resolved') AS resolved_at,
               max(value) AS max_value, any(threshold) AS threshold, any(message) AS message
        FROM @alerts WHERE started >= {_FROM} AND started < {_TO}
        GROUP BY alert_id {having} ORDER BY started_at DESC, alert_id LIMIT {{limit:UInt32}}""",
                       {**rng.params(), "limit": limit}, who)


def _top_issues(reader: ScopedReader, who: Principal, rng: DateRange) -> list[dict[str, Any]]:
    return reader.rows(f"""
        SELECT dtc_id AS component, any(description) AS description, uniqExact(vehicle_id) AS affected_vehicles,
               count() AS occurrences
        FROM @dtcs WHERE ts >= {_FROM} AND ts < {_TO}
        GROUP BY dtc_id ORDER BY affected_vehicles DESC, occurrences DESC, component LIMIT 10""", rng.params(), who)


def _data_quality(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    samples = reader.rows(f"SELECT sum(samples) AS samples FROM @samples_1h WHERE hour >= toStartOfHour({_FROM}) "
                          f"AND hour < {_TO}", rng.params(), who)[0]["samples"]
    dead = reader.rows(f"""
        SELECT error_code, sum(sample_count) AS samples FROM @dead_letters
        WHERE first_seen >= {_FROM} AND first_seen < {_TO} GROUP BY error_code ORDER BY error_code""",
                       rng.params(), who)
    return {"samples_stored": samples or 0, "dead_lettered": {r["error_code"]: r["samples"] for r in dead}}


def fleet_summary(reader: ScopedReader, who: Principal, rng: DateRange,
                  vehicles: list[dict[str, Any]]) -> dict[str, Any]:
    counts = reader.rows(f"""
        SELECT (SELECT count() FROM @vehicles WHERE first_seen < {_TO}) AS total_vehicles,
               (SELECT uniqExact(vehicle_id) FROM @samples_1h
                WHERE hour >= toStartOfHour({_TO} - INTERVAL 1 HOUR) AND hour < {_TO}) AS active_vehicles""",
                         rng.params(), who)[0]
    open_alerts = recent_alerts(reader, who, rng, limit=10_000, open_only=True)
    mean = _mean([v["health"] for v in vehicles])
    return {**counts, "critical_alerts": sum(1 for a in open_alerts if a["severity"] == "critical"),
            "open_alerts": len(open_alerts), "average_health_score": None if mean is None else mean / 100}


def fleet_dashboard(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    """Seed 003's fleet dashboard on our data; the parts we have no data for are listed, not invented.

    Also what the fleet web page draws (alerts by severity, the daily health trend, each vehicle's health),
    so the page needs one computation of the health scores and alert statistics rather than three."""
    scores = health_scores(reader, who, rng)
    vehicles = scores.vehicles
    stats = alert_stats(reader, who, rng)
    return {
        "range": rng.as_dict(),
        "fleet_summary": fleet_summary(reader, who, rng, vehicles),
        "health_distribution": _distribution(vehicles),
        "top_issues": _top_issues(reader, who, rng),
        "alert_stats": stats["total"],
        "alerts_by_severity": stats["by_severity"],
        "health_trend": scores.trend,
        "vehicle_health": vehicles,
        "data_quality": _data_quality(reader, who, rng),
        "recent_alerts": recent_alerts(reader, who, rng, limit=10),
        "unavailable": ["in_maintenance", "cost_metrics"],
    }


def owner_dashboard(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    """`who` is the owner whose vehicles are shown (the caller, or the owner an admin or support looks at)."""
    health = {v["vehicle_id"]: v for v in health_by_vehicle(reader, who, rng)}
    known = reader.rows("SELECT vehicle_id, fleet_id, last_seen FROM @vehicles ORDER BY vehicle_id", {}, who)
    open_alerts = recent_alerts(reader, who, rng, limit=1000, open_only=True)
    dtcs = reader.rows(f"""
        SELECT vehicle_id, dtc_id, argMax(status, ts) AS status, max(ts) AS last_seen FROM @dtcs
        WHERE ts >= {_FROM} AND ts < {_TO} GROUP BY vehicle_id, dtc_id ORDER BY vehicle_id, dtc_id""",
                       rng.params(), who)
    vehicles = [{**v, "health_score": health.get(v["vehicle_id"], {}).get("health"),
                 "band": health.get(v["vehicle_id"], {}).get("band"),
                 "active_alerts": [a for a in open_alerts if a["vehicle_id"] == v["vehicle_id"]],
                 "dtcs": [d for d in dtcs if d["vehicle_id"] == v["vehicle_id"]]} for v in known]
    return {"range": rng.as_dict(), "user_id": who.user_id, "vehicles": vehicles,
            "unavailable": ["maintenance_reminders", "service_history", "warranty_status"]}


def technician_dashboard(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    """Workload of a technician: the open alerts of their vehicles and what they acknowledged."""
    open_alerts = recent_alerts(reader, who, rng, limit=1000, open_only=True)
    mine = reader.rows(f"""
        SELECT count() AS acknowledged, uniqExact(alert_id) AS alerts FROM @alert_acks
        WHERE user_id = {{user:String}} AND acked_at >= {_FROM} AND acked_at < {_TO}""",
                       {**rng.params(), "user": who.user_id}, who)[0]
    vehicles = reader.rows("SELECT vehicle_id FROM @vehicles ORDER BY vehicle_id", {}, who)
    return {"range": rng.as_dict(), "user_id": who.user_id,
            "assigned_vehicles": [v["vehicle_id"] for v in vehicles],
            "pending": open_alerts, "acknowledged_by_me": mine["acknowledged"],
            "unavailable": ["schedule", "parts"]}


def executive_dashboard(reader: ScopedReader, who: Principal, rng: DateRange) -> dict[str, Any]:
    health = fleet_health(reader, who, rng)
    return {"range": rng.as_dict(), "average_health_score": health["average_health_score"],
            "health_distribution": health["health_distribution"], "health_trend": health["trend"],
            "fleet_uptime_pct": uptime(reader, who, rng)["fleet_uptime_pct"],
            "alerts": alert_stats(reader, who, rng)["total"], "unavailable": ["cost_metrics"]}


def vehicle_exists(reader: ScopedReader, who: Principal, vehicle_id: str) -> bool:
    rows = reader.rows("SELECT count() AS n FROM @vehicles WHERE vehicle_id = {vehicle:String}",
                       {"vehicle": vehicle_id}, who)
    return bool(rows[0]["n"])


def vehicle_channels(reader: ScopedReader, who: Principal, vehicle_id: str, rng: DateRange) -> list[dict[str, Any]]:
    return reader.rows(f"""
        SELECT channel, any(unit) AS unit, sum(samples) AS samples, min(min_value) AS min, max(max_value) AS max,
               sum(sum_value) / nullIf(sum(value_count), 0) AS mean, min(hour) AS first_hour, max(hour) AS last_hour
        FROM @samples_1h WHERE vehicle_id = {{vehicle:String}} AND hour >= toStartOfHour({_FROM}) AND hour < {_TO}
        GROUP BY channel ORDER BY channel""", {**rng.params(), "vehicle": vehicle_id}, who)


def window_series(reader: ScopedReader, who: Principal, vehicle_id: str, channel: str, rng: DateRange,
                  kind: str, limit: int) -> list[dict[str, Any]]:
    return reader.rows(f"""
        SELECT window_start, window_end, count, min, max, mean, last, p95 FROM @windows
        WHERE key = {{vehicle:String}} AND channel = {{channel:String}} AND window_kind = {{kind:String}}
          AND window_start >= {_FROM} AND window_start < {_TO}
        ORDER BY window_start LIMIT {{limit:UInt32}}""",
                       {**rng.params(), "vehicle": vehicle_id, "channel": channel, "kind": kind, "limit": limit}, who)


_RUNS = f"""
    SELECT vehicle_id AS station, run_id, min(ts) AS started, max(ts) AS ended,
           round(dateDiff('millisecond', min(ts), max(ts)) / 1000, 3) AS duration_s, count() AS samples,
           maxIf(value, channel = 'power') AS peak_hp, maxIf(value, channel = 'torque') AS peak_torque_ftlb,
           maxIf(value, channel = 'engine_speed') AS max_rpm, round(avgIf(value, channel = 'afr'), 3) AS mean_afr
    FROM @samples WHERE run_id != '' AND ts >= {_FROM} AND ts < {_TO}"""


def dyno_runs(reader: ScopedReader, who: Principal, rng: DateRange) -> list[dict[str, Any]]:
    return reader.rows(_RUNS + " GROUP BY station, run_id ORDER BY started, station, run_id", rng.params(), who)


def dyno_run(reader: ScopedReader, who: Principal, run_id: str, points: int) -> dict[str, Any] | None:
    """One run's summary and its power, torque and engine-speed curves (at most `points` per channel)."""
    everything = DateRange(dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(2200, 1, 1, tzinfo=dt.UTC))
    params = {**everything.params(), "run": run_id}
    summary = reader.rows(_RUNS + " AND run_id = {run:String} GROUP BY station, run_id", params, who)
    if not summary:
        return None
    curves = reader.rows("""
        SELECT channel, groupArray((t, v)) AS points FROM (
            SELECT channel, intDiv(toUnixTimestamp64Milli(ts) - {t0:Int64}, {step:Int64}) AS bucket,
                   min(toUnixTimestamp64Milli(ts)) AS t, max(value) AS v
            FROM @samples WHERE run_id = {run:String} AND channel IN ('power', 'torque', 'engine_speed', 'afr')
            GROUP BY channel, bucket ORDER BY channel, bucket)
        GROUP BY channel ORDER BY channel""", {**params, **_buckets(summary[0], points)}, who)
    return {**summary[0], "curves": {c["channel"]: [{"t_ms": t, "value": v} for t, v in c["points"]] for c in curves}}


def _buckets(run: dict[str, Any], points: int) -> dict[str, int]:
    start = dt.datetime.fromisoformat(run["started"]).replace(tzinfo=dt.UTC)
    end = dt.datetime.fromisoformat(run["ended"]).replace(tzinfo=dt.UTC)
    span_ms = int((end - start).total_seconds() * 1000) + 1  # both ends included
    return {"t0": int(start.timestamp() * 1000), "step": max(1, -(-span_ms // max(1, points)))}
