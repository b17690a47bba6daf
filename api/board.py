"""The JSON the web pages need beyond the dashboards: last known positions, alerts with their acknowledgement,
the org's users, and each channel's latest value.

Same rules as every `/api/v1` endpoint: a permission per endpoint, reads only through the scoped layer (so
another tenant's rows never come back), 404 for a vehicle outside the caller's scope. Not cached: the alert
board and latest values must show an acknowledgement or a new sample as soon as the store has it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from fleetstream.api import analytics
from fleetstream.api.analytics import DateRange
from fleetstream.api.auth import not_found, require, services_of
from fleetstream.api.rbac import Permission, Principal
from fleetstream.api.routes import Range
from fleetstream.api.scoped import ScopedReader

__all__ = ["alert_board", "latest_values", "router"]

router = APIRouter(prefix="/api/v1")
P = Permission
_FROM, _TO = "{from:DateTime64(3)}", "{to:DateTime64(3)}"


def positions(reader: ScopedReader, who: Principal, rng: DateRange) -> list[dict[str, Any]]:
    """Each vehicle's last GPS fix in the range (vehicles without a fix in the range are absent, not guessed)."""
    return reader.rows(f"""
        SELECT vehicle_id, argMax(lat, t) AS latitude, argMax(lon, t) AS longitude, max(t) AS fixed_at
        FROM (SELECT vehicle_id, ts AS t, latitude AS lat, longitude AS lon FROM @gps_points
              WHERE ts >= {_FROM} AND ts < {_TO} AND latitude IS NOT NULL AND longitude IS NOT NULL)
        GROUP BY vehicle_id ORDER BY vehicle_id""", rng.params(), who)


def alert_board(reader: ScopedReader, who: Principal, rng: DateRange, limit: int) -> list[dict[str, Any]]:
    """Alert episodes started in the range, newest first, each with its first acknowledgement (or none)."""
    alerts = analytics.recent_alerts(reader, who, rng, limit=limit)
    if not alerts:
        return []
    acks = reader.rows("""
        SELECT alert_id, min(at) AS acked_at, argMin(by, at) AS acked_by
        FROM (SELECT alert_id, acked_at AS at, user_id AS by FROM @alert_acks WHERE has({ids:Array(String)}, alert_id))
        GROUP BY alert_id""", {"ids": [a["alert_id"] for a in alerts]}, who)
    by_id = {a["alert_id"]: a for a in acks}
    return [{**a, "acked_at": by_id.get(a["alert_id"], {}).get("acked_at"),
             "acked_by": by_id.get(a["alert_id"], {}).get("acked_by")} for a in alerts]


def latest_values(reader: ScopedReader, who: Principal, vehicle_id: str, rng: DateRange) -> list[dict[str, Any]]:
    """Each channel's newest numeric sample of one vehicle in the range."""
    return reader.rows(f"""
        SELECT channel, any(u) AS unit, argMax(v, t) AS value, max(t) AS at
        FROM (SELECT channel, unit AS u, value AS v, ts AS t FROM @samples
              WHERE vehicle_id = {{vehicle:String}} AND ts >= {_FROM} AND ts < {_TO} AND value IS NOT NULL)
        GROUP BY channel ORDER BY channel""", {**rng.params(), "vehicle": vehicle_id}, who)


@router.get("/positions", tags=["vehicles"])
def last_positions(request: Request, rng: Range,
                   who: Annotated[Principal, Depends(require(P.VEHICLES_READ))]) -> list[dict[str, Any]]:
    """Last known position of each vehicle in the range (latitude, longitude in degrees, WGS84)."""
    return positions(services_of(request).reader, who, rng)


@router.get("/alerts/board", tags=["alerts"])
def alerts_with_acknowledgements(request: Request, rng: Range,
                                 who: Annotated[Principal, Depends(require(P.ALERTS_READ))],
                                 limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> list[dict[str, Any]]:
    """Alerts started in the range with `acked_at`/`acked_by` of their first acknowledgement (null if none)."""
    return alert_board(services_of(request).reader, who, rng, limit)


@router.get("/vehicles/{vehicle_id}/latest", tags=["vehicles"])
def vehicle_latest(vehicle_id: str, request: Request, rng: Range,
                   who: Annotated[Principal, Depends(require(P.VEHICLES_READ))]) -> list[dict[str, Any]]:
    reader = services_of(request).reader
    if not analytics.vehicle_exists(reader, who, vehicle_id):
        raise not_found(request, "no such vehicle")
    return latest_values(reader, who, vehicle_id, rng)


@router.get("/dyno/runs/{run_id}/channels", tags=["dyno"])
def dyno_run_channels(run_id: str, request: Request,
                      who: Annotated[Principal, Depends(require(P.DYNO_READ))]) -> list[dict[str, Any]]:
    """The run's channels with their units as recorded (several when a channel's unit changed within the run),
    so a chart labels the values with the unit they were stored in."""
    found = services_of(request).reader.rows("""
        SELECT channel, arraySort(groupUniqArray(unit)) AS units, count() AS samples FROM @samples
        WHERE run_id = {run:String} GROUP BY channel ORDER BY channel""", {"run": run_id}, who)
    if not found:
        raise not_found(request, "no such run")
    return found


@router.get("/users", tags=["users"])
def org_users(request: Request, who: Annotated[Principal, Depends(require(P.USERS_MANAGE))]) -> list[dict[str, Any]]:
    """The users of the caller's org (never hashes; other orgs' users are not listed)."""
    return [u.public() for u in services_of(request).users.all() if u.org_id == who.org_id]
