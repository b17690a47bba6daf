"""Seed 004's events: what a tracked event is, the record it becomes on Kafka, and the SQL that reads them back.

An event is accepted as sent: its type, name and properties are kept verbatim (properties as the JSON object
sent), its tenant is always the caller's org (a body cannot name another). The reads (`query`, `funnel`)
go through the scoped `@events` source with every filter bound as a parameter.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from fleetstream.api.analytics import DateRange
from fleetstream.api.rbac import Principal
from fleetstream.api.scoped import ScopedReader

__all__ = ["EventIn", "EventQuery", "FunnelRequest", "event_record", "funnel", "query_events"]

Text = Annotated[str, StringConstraints(max_length=200)]


def utc_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch; a time without a zone is UTC."""
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    return int(aware.timestamp() * 1000)


class EventIn(BaseModel):
    """One event as a client tracks it (seed 004's `POST /events/track` body)."""

    event_type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    event_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    user_id: Text = ""
    session_id: Text = ""
    vehicle_id: Text = ""
    source: Text = ""
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: dt.datetime | None = Field(default=None, description="When it happened; default: when received.")
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None, description="Your id for the event: a retried event with the same id and time is stored once.")


class EventBatch(BaseModel):
    events: list[EventIn] = Field(min_length=1)
    source: Text = Field(default="", description="Applied to events that name no source of their own.")


def event_record(event: EventIn, who: Principal, received_ms: int | None = None,
                 default_source: str = "") -> dict[str, Any]:
    """The analytics_event/v1 record of `event` tracked by `who` (the tenant is the caller's org)."""
    received = received_ms if received_ms is not None else int(time.time() * 1000)
    return {"event_id": event.event_id or uuid.uuid4().hex, "org_id": who.org_id, "event_type": event.event_type,
            "event_name": event.event_name, "user_id": event.user_id, "session_id": event.session_id,
            "vehicle_id": event.vehicle_id, "source": event.source or default_source,
            "properties_json": json.dumps(event.properties, separators=(",", ":"), default=str),
            "context_json": json.dumps(event.context, separators=(",", ":"), default=str),
            "timestamp_ms": utc_ms(event.timestamp) if event.timestamp else received, "received_ms": received,
            "tracked_by": who.user_id}


class EventQuery(BaseModel):
    """Seed 004's `POST /events/query`: every filter optional, newest first."""

    event_type: Text | None = None
    event_name: Text | None = None
    user_id: Text | None = None
    session_id: Text | None = None
    vehicle_id: Text | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


_FILTERS = ("event_type", "event_name", "user_id", "session_id", "vehicle_id")

_QUERY = """
    SELECT event_id, event_type, event_name, user_id, session_id, vehicle_id, source, ts AS timestamp,
           properties, context
    FROM @events
    WHERE ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)} AND %s
    ORDER BY ts DESC, event_id LIMIT {limit:UInt32}"""


def _filter_sql(fields: tuple[str, ...]) -> str:
    """`({f:String} = '' OR f = {f:String})` per field: one statement for every filter combination, each value
    bound (never spliced into the text); an empty or absent filter matches everything."""
    return " AND ".join(f"({{{f}:String}} = '' OR {f} = {{{f}:String}})" for f in fields)


def query_events(reader: ScopedReader, who: Principal, q: EventQuery, rng: DateRange) -> list[dict[str, Any]]:
    params = {**rng.params(), "limit": q.limit, **{f: getattr(q, f) or "" for f in _FILTERS}}
    rows = reader.rows(_QUERY % _filter_sql(_FILTERS), params, who)
    for row in rows:
        row["properties"] = json.loads(row["properties"] or "{}")
        row["context"] = json.loads(row["context"] or "{}")
    return rows


class FunnelRequest(BaseModel):
    """Seed 004's funnel analysis: how many of the actors did step 1, then step 2, ... within `window_s`."""

    funnel_steps: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        min_length=2, max_length=20)
    step_field: Literal["event_type", "event_name"] = Field(
        default="event_type", description="Whether a step names an event type or an event name.")
    actor: Literal["user_id", "session_id", "vehicle_id"] = Field(
        default="user_id", description="Whose path is followed; events without one are left out.")
    window_s: int = Field(default=86_400, ge=1, le=90 * 86_400,
                          description="Longest time from the first step to the last.")
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None


def funnel(reader: ScopedReader, who: Principal, spec: FunnelRequest, rng: DateRange) -> dict[str, Any]:
    """ClickHouse's `windowFunnel` per actor: the deepest step each reached in order, then the count per step."""
    steps = ", ".join(f"{spec.step_field} = {{s{i}:String}}" for i in range(len(spec.funnel_steps)))
    sql = f"""
        SELECT level, count() AS actors FROM (
            SELECT {spec.actor} AS actor, windowFunnel({{window:UInt64}})(toDateTime(ts), {steps}) AS level
            FROM @events
            WHERE ts >= {{from:DateTime64(3)}} AND ts < {{to:DateTime64(3)}} AND {spec.actor} != ''
            GROUP BY actor)
        GROUP BY level ORDER BY level"""
    params: dict[str, Any] = {**rng.params(), "window": spec.window_s,
                              **{f"s{i}": step for i, step in enumerate(spec.funnel_steps)}}
    reached = {int(r["level"]): int(r["actors"]) for r in reader.rows(sql, params, who)}
    out: list[dict[str, Any]] = []
    first: int | None = None
    for i, step in enumerate(spec.funnel_steps, start=1):
        count = sum(n for level, n in reached.items() if level >= i)
        first = count if first is None else first
        previous: int = out[-1]["actors"] if out else count
        out.append({"step": i, "name": step, "actors": count,
                    "conversion_from_previous": count / previous if previous else None,
                    "conversion_from_first": count / first if first else None})
    return {"range": rng.as_dict(), "actor": spec.actor, "step_field": spec.step_field, "window_s": spec.window_s,
            "actors_seen": sum(reached.values()), "steps": out}
