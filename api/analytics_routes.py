"""Seed 004's endpoints under `/api/v1`: events (track, batch, query, funnel), custom metrics (define, record
values, aggregate) and segments (define, list members).

Writes need `analytics:write` and succeed only when the broker acknowledged every record (202; 503 with the
count when it did not, so the client retries: events carrying their `event_id` are stored once). The
records reach ClickHouse through the sink. Reads need `metrics:read` and go through the scoped layer.
The tenant is always the caller's org.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel

from fleetstream.api import custom_metrics, events, segments
from fleetstream.api.analytics import DateRange
from fleetstream.api.auth import not_found, require, services_of
from fleetstream.api.custom_metrics import (
    AggregateRequest,
    MetricDefinition,
    MetricValueBatch,
    MetricValueIn,
    RejectedValue,
)
from fleetstream.api.events import EventBatch, EventIn, EventQuery, FunnelRequest
from fleetstream.api.publish import PublishError
from fleetstream.api.rbac import Permission, Principal
from fleetstream.api.routes import date_range
from fleetstream.api.segments import Segment, SegmentError
from fleetstream.api.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
P = Permission
Writer = Annotated[Principal, Depends(require(P.ANALYTICS_WRITE))]
Reader = Annotated[Principal, Depends(require(P.METRICS_READ))]


def _publishing(request: Request) -> Services:
    services = services_of(request)
    if services.publisher is None:
        raise HTTPException(503, "this server does not publish (no Kafka producer)")
    return services


def _publish_all(services: Services, topic: str, record_type: str, items: list[tuple[str, dict[str, Any]]]) -> None:
    assert services.publisher is not None
    try:
        services.publisher.send_all_confirmed(topic, record_type, items)
    except PublishError as exc:
        raise HTTPException(503, f"{exc}; retry the request") from exc


def _range(start: dt.datetime | None, end: dt.datetime | None) -> DateRange:
    return date_range(start, end)


# --- events --------------------------------------------------------------------------------------------------


def _track(request: Request, who: Principal, batch: list[EventIn], source: str = "") -> dict[str, Any]:
    services = _publishing(request)
    if len(batch) > services.settings.api.max_batch_events:
        raise HTTPException(413, f"at most {services.settings.api.max_batch_events} events per request; split the "
                                 "batch")
    records = [events.event_record(e, who, default_source=source) for e in batch]
    _publish_all(services, services.settings.api.events_topic, "analytics_event", [(who.org_id, r) for r in records])
    return {"accepted": len(records), "event_ids": [r["event_id"] for r in records]}


@router.post("/events/track", status_code=202, tags=["events"])
def track(event: EventIn, request: Request, who: Writer) -> dict[str, Any]:
    """Track one event: 202 once the broker has it (it reaches ClickHouse through the sink)."""
    return _track(request, who, [event])


@router.post("/events/track/batch", status_code=202, tags=["events"])
def track_batch(batch: EventBatch, request: Request, who: Writer) -> dict[str, Any]:
    """Track many events: 202 only when the broker acknowledged every one of them."""
    return _track(request, who, batch.events, batch.source)


@router.post("/events/query", tags=["events"])
def query_events(q: EventQuery, request: Request, who: Reader) -> list[dict[str, Any]]:
    """The caller's org's events matching every given filter, newest first (default: the last 7 days)."""
    return events.query_events(services_of(request).reader, who, q, _range(q.start_time, q.end_time))


@router.post("/events/funnel", tags=["events"])
def funnel(spec: FunnelRequest, request: Request, who: Reader) -> dict[str, Any]:
    """How many users (or sessions, vehicles) went through the steps in order within the window."""
    return events.funnel(services_of(request).reader, who, spec, _range(spec.start_time, spec.end_time))


# --- custom metrics ------------------------------------------------------------------------------------------


@router.post("/metrics", status_code=201, tags=["metrics"])
def create_metric(definition: MetricDefinition, request: Request, who: Writer) -> dict[str, Any]:
    """Define (or redefine) a custom metric of the caller's org."""
    services = _publishing(request)
    try:
        updated_ms = services.definitions.put(who, "metric", definition.name, definition.model_dump())
    except PublishError as exc:
        raise HTTPException(503, str(exc)) from exc
    return {**definition.model_dump(), "updated_ms": updated_ms}


@router.get("/metrics", tags=["metrics"])
def list_metrics(request: Request, who: Reader) -> list[dict[str, Any]]:
    return list(services_of(request).definitions.all(who, "metric").values())


def _records(request: Request, who: Principal, values: list[MetricValueIn]) -> list[tuple[str, dict[str, Any]]]:
    definitions = services_of(request).definitions.all(who, "metric")
    out = []
    for value in values:
        definition = definitions.get(value.metric_id)
        if definition is None:
            raise not_found(request, f"no metric {value.metric_id}: define it with POST /api/v1/metrics first")
        try:
            custom_metrics.check_value(value, definition)
        except RejectedValue as exc:
            raise HTTPException(422, str(exc)) from exc
        out.append((who.org_id, custom_metrics.value_record(value, definition, who)))
    return out


@router.post("/metrics/values", status_code=202, tags=["metrics"])
def record_value(value: MetricValueIn, request: Request, who: Writer) -> dict[str, Any]:
    """Record one value of a defined metric (counter increment, gauge reading, histogram observation)."""
    services = _publishing(request)
    items = _records(request, who, [value])
    _publish_all(services, services.settings.api.metric_values_topic, "metric_value", items)
    return {"accepted": 1, "value_ids": [r["value_id"] for _, r in items]}


@router.post("/metrics/values/batch", status_code=202, tags=["metrics"])
def record_values(batch: MetricValueBatch, request: Request, who: Writer) -> dict[str, Any]:
    """Record many values; all are checked first, and 202 only when the broker acknowledged every one."""
    services = _publishing(request)
    if len(batch.values) > services.settings.api.max_batch_events:
        raise HTTPException(413, f"at most {services.settings.api.max_batch_events} values per request")
    items = _records(request, who, batch.values)
    _publish_all(services, services.settings.api.metric_values_topic, "metric_value", items)
    return {"accepted": len(items), "value_ids": [r["value_id"] for _, r in items]}


@router.post("/metrics/aggregate", tags=["metrics"])
def aggregate(spec: AggregateRequest, request: Request, response: Response, who: Reader,
              refresh: Annotated[bool, Query(description="Recompute instead of answering from the 5-minute "
                                                         "cache.")] = False) -> dict[str, Any]:
    """sum, avg, min, max, count or p95 of a custom metric or a KPI per minute, hour or day (cached for 5 minutes
    per caller scope, like the other metrics; `?refresh=true` recomputes)."""
    services = services_of(request)
    if spec.source == "custom" and services.definitions.get(who, "metric", spec.metric_id) is None:
        raise not_found(request, f"no metric {spec.metric_id}")
    rng = _range(spec.start_time, spec.end_time)
    key = (request.url.path, spec.model_dump_json(), services.reader.scope_of(who).cache_key)
    value, hit = services.cache.get_or_compute(key, lambda: custom_metrics.aggregate(services.reader, who, spec, rng),
                                               refresh)
    services.metrics.cache.labels("hit" if hit else "miss").inc()
    response.headers["X-Cache"] = "hit" if hit else "miss"
    result: dict[str, Any] = value
    return result


# --- segments ------------------------------------------------------------------------------------------------


class SegmentMembers(BaseModel):
    segment: str
    range: dict[str, str]
    vehicles: list[dict[str, Any]]


def _members(request: Request, who: Principal, segment: Segment, rng: DateRange) -> SegmentMembers:
    try:
        vehicles = segments.members(services_of(request).reader, who, segment, rng)
    except SegmentError as exc:
        raise HTTPException(422, str(exc)) from exc
    return SegmentMembers(segment=segment.name, range=rng.as_dict(), vehicles=vehicles)


@router.post("/segments", status_code=201, tags=["segments"])
def create_segment(segment: Segment, request: Request, who: Writer) -> dict[str, Any]:
    """Define (or redefine) a segment; its rules are checked by evaluating it once."""
    services = _publishing(request)
    evaluated = _members(request, who, segment, date_range(None, None))
    try:
        updated_ms = services.definitions.put(who, "segment", segment.name, segment.model_dump())
    except PublishError as exc:
        raise HTTPException(503, str(exc)) from exc
    return {**segment.model_dump(), "updated_ms": updated_ms, "members_now": len(evaluated.vehicles)}


@router.get("/segments", tags=["segments"])
def list_segments(request: Request, who: Reader) -> list[dict[str, Any]]:
    return list(services_of(request).definitions.all(who, "segment").values())


@router.post("/segments/evaluate", tags=["segments"])
def evaluate_segment(segment: Segment, request: Request, who: Reader,
                     start: Annotated[dt.datetime | None, Query(alias="from")] = None,
                     end: Annotated[dt.datetime | None, Query(alias="to")] = None) -> SegmentMembers:
    """The vehicles matching rules given in the request (nothing is saved)."""
    return _members(request, who, segment, _range(start, end))


@router.get("/segments/{name}/members", tags=["segments"])
def segment_members(name: str, request: Request, who: Reader,
                    start: Annotated[dt.datetime | None, Query(alias="from")] = None,
                    end: Annotated[dt.datetime | None, Query(alias="to")] = None) -> SegmentMembers:
    """The vehicles in a saved segment now (KPIs: their latest value in the range)."""
    body = services_of(request).definitions.get(who, "segment", name)
    if body is None:
        raise not_found(request, "no such segment")
    return _members(request, who, Segment(**body), _range(start, end))
