"""The `/api/v1` endpoints (paths as in seed 003): every one declares its permission, reads through the scoped
layer, and answers 404 for anything outside the caller's org or vehicles.

Read endpoints take a custom date range (`from`, `to`, ISO-8601, UTC when no zone is given; default the last
7 days) and are cached for `api.cache_ttl_s` per caller scope; `?refresh=true` recomputes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from fleetstream.api import analytics
from fleetstream.api.analytics import DateRange
from fleetstream.api.auth import not_found, require, services_of
from fleetstream.api.publish import PublishError
from fleetstream.api.rbac import Permission, Principal, Role
from fleetstream.api.reports import MEDIA_TYPES, ReportError

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
P = Permission
MAX_RANGE = dt.timedelta(days=400)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def date_range(
    start: Annotated[dt.datetime | None, Query(alias="from", description="Start (inclusive), ISO-8601.")] = None,
    end: Annotated[dt.datetime | None, Query(alias="to", description="End (exclusive), ISO-8601; default now.")] = None,
) -> DateRange:
    stop = _utc(end) if end is not None else dt.datetime.now(dt.UTC)
    begin = _utc(start) if start is not None else stop - dt.timedelta(days=7)
    if begin >= stop or stop - begin > MAX_RANGE:
        raise HTTPException(422, f"`from` must be before `to`, at most {MAX_RANGE.days} days apart")
    return DateRange(begin, stop)


Range = Annotated[DateRange, Depends(date_range)]
Refresh = Annotated[bool, Query(description="Recompute instead of answering from the 5-minute cache.")]


def _cached(request: Request, response: Response, who: Principal, refresh: bool, compute: Callable[[], Any]) -> Any:
    services = services_of(request)
    params = tuple(sorted((k, v) for k, v in request.query_params.multi_items() if k != "refresh"))
    key = (request.url.path, params, services.reader.scope_of(who).cache_key)
    value, hit = services.cache.get_or_compute(key, compute, refresh)
    services.metrics.cache.labels("hit" if hit else "miss").inc()
    response.headers["X-Cache"] = "hit" if hit else "miss"
    return value


# --- users ---------------------------------------------------------------------------------------------------


@router.get("/users/me", tags=["users"])
def me(who: Annotated[Principal, Depends(require())]) -> dict[str, Any]:
    return {"user_id": who.user_id, "username": who.username, "role": who.role.value, "org_id": who.org_id,
            "vehicle_ids": list(who.vehicle_ids), "permissions": sorted(p.value for p in who.permissions)}


@router.get("/users/{user_id}/permissions", tags=["users"])
def user_permissions(user_id: str, request: Request,
                     who: Annotated[Principal, Depends(require())]) -> dict[str, Any]:
    target = services_of(request).users.by_user_id(user_id)
    visible = target is not None and target.org_id == who.org_id and (
        target.user_id == who.user_id or who.may(P.USERS_MANAGE))
    if target is None or not visible:
        raise not_found(request, "no such user")
    return {"user_id": target.user_id, "role": target.role.value, "vehicle_ids": list(target.vehicle_ids),
            "permissions": sorted(p.value for p in target.principal().permissions)}


# --- dashboards ----------------------------------------------------------------------------------------------


@router.get("/dashboards/fleet", tags=["dashboards"])
def fleet_dashboard(request: Request, response: Response, rng: Range,
                    who: Annotated[Principal, Depends(require(P.DASHBOARD_FLEET))],
                    refresh: Refresh = False) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: analytics.fleet_dashboard(reader, who, rng))


def _person(request: Request, who: Principal, user_id: str, role: Role) -> Principal:
    """The owner or technician a dashboard is about: the caller, or someone of the caller's org an admin,
    or (for owners) support, looks at. Anyone else is a 404."""
    if user_id == who.user_id and who.role == role:
        return who
    target = services_of(request).users.by_user_id(user_id)
    looks_after = who.role == Role.ADMIN or (who.role == Role.SUPPORT and role == Role.OWNER)
    if target is None or target.org_id != who.org_id or target.role != role or not looks_after:
        raise not_found(request, "no such user")
    return target.principal()


@router.get("/dashboards/owner/{user_id}", tags=["dashboards"])
def owner_dashboard(user_id: str, request: Request, response: Response, rng: Range,
                    who: Annotated[Principal, Depends(require(P.DASHBOARD_OWNER))],
                    refresh: Refresh = False) -> Any:
    owner = _person(request, who, user_id, Role.OWNER)
    reader = services_of(request).reader
    return _cached(request, response, owner, refresh, lambda: analytics.owner_dashboard(reader, owner, rng))


@router.get("/dashboards/technician/{user_id}", tags=["dashboards"])
def technician_dashboard(user_id: str, request: Request, response: Response, rng: Range,
                         who: Annotated[Principal, Depends(require(P.DASHBOARD_TECHNICIAN))],
                         refresh: Refresh = False) -> Any:
    tech = _person(request, who, user_id, Role.TECHNICIAN)
    reader = services_of(request).reader
    return _cached(request, response, tech, refresh, lambda: analytics.technician_dashboard(reader, tech, rng))


@router.get("/dashboards/executive", tags=["dashboards"])
def executive_dashboard(request: Request, response: Response, rng: Range,
                        who: Annotated[Principal, Depends(require(P.DASHBOARD_EXECUTIVE))],
                        refresh: Refresh = False) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: analytics.executive_dashboard(reader, who, rng))


# --- metrics -------------------------------------------------------------------------------------------------


@router.get("/metrics/fleet-health", tags=["metrics"])
def fleet_health(request: Request, response: Response, rng: Range,
                 who: Annotated[Principal, Depends(require(P.METRICS_READ))], refresh: Refresh = False) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: analytics.fleet_health(reader, who, rng))


@router.get("/metrics/uptime", tags=["metrics"])
def uptime(request: Request, response: Response, rng: Range,
           who: Annotated[Principal, Depends(require(P.METRICS_READ))], refresh: Refresh = False) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: analytics.uptime(reader, who, rng))


@router.get("/metrics/alert-stats", tags=["metrics"])
def alert_stats(request: Request, response: Response, rng: Range,
                who: Annotated[Principal, Depends(require(P.METRICS_READ))], refresh: Refresh = False) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: analytics.alert_stats(reader, who, rng))


# --- alerts --------------------------------------------------------------------------------------------------


@router.get("/alerts", tags=["alerts"])
def alerts(request: Request, response: Response, rng: Range,
           who: Annotated[Principal, Depends(require(P.ALERTS_READ))], refresh: Refresh = False,
           open_only: bool = False, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh,
                   lambda: analytics.recent_alerts(reader, who, rng, limit=limit, open_only=open_only))


class Acknowledgement(BaseModel):
    note: str = Field(default="", max_length=2000)


@router.post("/alerts/{alert_id}/acknowledge", status_code=202, tags=["alerts"])
def acknowledge(alert_id: str, request: Request, who: Annotated[Principal, Depends(require(P.ALERTS_ACKNOWLEDGE))],
                body: Annotated[Acknowledgement | None, Body()] = None) -> dict[str, Any]:
    """Publish the acknowledgement on the acks topic; 202 once the broker has it (it reaches ClickHouse through
    the sink, and alert-stats' time to acknowledge counts it from there)."""
    services = services_of(request)
    found = services.reader.rows("SELECT any(key) AS vehicle_id FROM @alerts WHERE alert_id = {alert:String} "
                                 "GROUP BY alert_id", {"alert": alert_id}, who)
    if not found or not who.sees_vehicle(found[0]["vehicle_id"]):
        raise not_found(request, "no such alert")
    if services.publisher is None:
        raise HTTPException(503, "this server does not publish (no Kafka producer)")
    acked_ms = int(time.time() * 1000)
    record = {"alert_id": alert_id, "org_id": who.org_id, "key": found[0]["vehicle_id"], "user_id": who.user_id,
              "acked_ms": acked_ms, "note": body.note if body else ""}
    try:
        services.publisher.send_confirmed(services.settings.api.acks_topic, "alert_ack", record["key"], record)
    except PublishError as exc:
        raise HTTPException(503, str(exc)) from exc
    return {"alert_id": alert_id, "acknowledged_ms": acked_ms, "user_id": who.user_id}


# --- vehicles ------------------------------------------------------------------------------------------------


@router.get("/vehicles", tags=["vehicles"])
def vehicles(request: Request, who: Annotated[Principal, Depends(require(P.VEHICLES_READ))]) -> Any:
    return services_of(request).reader.rows(
        "SELECT vehicle_id, fleet_id, first_seen, last_seen FROM @vehicles ORDER BY vehicle_id", {}, who)


def _visible_vehicle(request: Request, who: Principal, vehicle_id: str) -> None:
    if not analytics.vehicle_exists(services_of(request).reader, who, vehicle_id):
        raise not_found(request, "no such vehicle")


@router.get("/vehicles/{vehicle_id}", tags=["vehicles"])
def vehicle(vehicle_id: str, request: Request, response: Response, rng: Range,
            who: Annotated[Principal, Depends(require(P.VEHICLES_READ))], refresh: Refresh = False) -> Any:
    """Drill-down, step 2: one vehicle's channels in the range (from the hourly rollup)."""
    _visible_vehicle(request, who, vehicle_id)
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: {
        "vehicle_id": vehicle_id, "range": rng.as_dict(),
        "channels": analytics.vehicle_channels(reader, who, vehicle_id, rng)})


@router.get("/vehicles/{vehicle_id}/channels/{channel}/windows", tags=["vehicles"])
def channel_windows(vehicle_id: str, channel: str, request: Request, response: Response, rng: Range,
                    who: Annotated[Principal, Depends(require(P.VEHICLES_READ))], refresh: Refresh = False,
                    kind: Literal["tumbling", "hopping"] = "tumbling",
                    limit: Annotated[int, Query(ge=1, le=50_000)] = 5000) -> Any:
    """Drill-down, step 3: the channel's closed window aggregates (count, min, max, mean, last, p95)."""
    _visible_vehicle(request, who, vehicle_id)
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: {
        "vehicle_id": vehicle_id, "channel": channel, "kind": kind, "range": rng.as_dict(),
        "windows": analytics.window_series(reader, who, vehicle_id, channel, rng, kind, limit)})


# --- dyno ----------------------------------------------------------------------------------------------------


@router.get("/dyno/runs", tags=["dyno"])
def dyno_runs(request: Request, response: Response, rng: Range,
              who: Annotated[Principal, Depends(require(P.DYNO_READ))], refresh: Refresh = False) -> Any:
    reader = services_of(request).reader
    return _cached(request, response, who, refresh, lambda: analytics.dyno_runs(reader, who, rng))


@router.get("/dyno/runs/{run_id}", tags=["dyno"])
def dyno_run(run_id: str, request: Request, who: Annotated[Principal, Depends(require(P.DYNO_READ))],
             points: Annotated[int, Query(ge=2, le=5000)] = 500) -> Any:
    run = analytics.dyno_run(services_of(request).reader, who, run_id, points)
    if run is None:
        raise not_found(request, "no such run")
    return run


# --- audit ---------------------------------------------------------------------------------------------------

_AUDIT = """
    SELECT ts, request_id, user_id, role, auth, method, path, query, status, duration_ms, client FROM @audit_log
    WHERE ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)} AND ({user:String} = '' OR user_id = {user:String})
    ORDER BY ts DESC LIMIT {limit:UInt32}"""


@router.get("/audit/logs", tags=["audit"])
def audit_logs(request: Request, rng: Range, who: Annotated[Principal, Depends(require(P.AUDIT_READ))],
               user_id: str = "", limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> Any:
    return services_of(request).reader.rows(_AUDIT, {**rng.params(), "user": user_id, "limit": limit}, who)


@router.get("/audit/user-activity/{user_id}", tags=["audit"])
def user_activity(user_id: str, request: Request, rng: Range,
                  who: Annotated[Principal, Depends(require(P.AUDIT_READ))],
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> Any:
    target = services_of(request).users.by_user_id(user_id)
    if target is None or target.org_id != who.org_id:
        raise not_found(request, "no such user")
    return services_of(request).reader.rows(_AUDIT, {**rng.params(), "user": user_id, "limit": limit}, who)


# --- reports -------------------------------------------------------------------------------------------------


class ReportRequest(BaseModel):
    kind: Literal["fleet_health", "alerts", "data_quality", "dyno_runs"]
    format: Literal["csv", "xlsx", "pdf"] = "csv"
    from_: dt.datetime | None = Field(default=None, alias="from")
    to: dt.datetime | None = None
    vehicle_ids: list[str] = Field(default_factory=list, max_length=10_000)


@router.post("/reports/generate", status_code=201, tags=["reports"])
def generate_report(spec: ReportRequest, request: Request,
                    who: Annotated[Principal, Depends(require(P.REPORTS_GENERATE))]) -> dict[str, Any]:
    services = services_of(request)
    rng = date_range(spec.from_, spec.to)
    try:
        report = services.reports.generate(services.reader, who, spec.kind, spec.format, rng, spec.vehicle_ids)
    except ReportError as exc:
        raise HTTPException(422, str(exc)) from exc
    return {**report.as_dict(), "download": f"/api/v1/reports/{report.report_id}/download"}


@router.get("/reports/{report_id}/download", tags=["reports"], response_class=FileResponse)
def download_report(report_id: str, request: Request,
                    who: Annotated[Principal, Depends(require(P.REPORTS_GENERATE))]) -> FileResponse:
    found = services_of(request).reports.find(report_id, who)
    if found is None:
        raise not_found(request, "no such report")
    report, path = found
    return FileResponse(path, media_type=MEDIA_TYPES[report.format],
                        filename=f"{report.kind}-{report.report_id[:8]}.{report.format}")
