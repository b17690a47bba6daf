"""Server-sent events for the pages: new and changed alerts, and a vehicle's latest values, without a reload.

The store is polled every `POLL_S` per open stream through the scoped layer (the same queries, scope and
permissions as the JSON endpoints), and only what changed since the previous poll is sent. The pages read
the stream with `fetch` and the `Authorization` header, so the token never goes into a URL (or the audit log's
query column). A stream ends after `MAX_STREAM_S`; the page reconnects, which re-checks the token.

Events: `alerts` (a JSON list of alert rows, as `/alerts/board` gives them) and `latest` (a JSON list of
channel rows, as `/vehicles/{id}/latest` gives them); a comment line every poll keeps proxies from closing
an idle stream.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from fleetstream.api import analytics, board
from fleetstream.api.analytics import DateRange
from fleetstream.api.auth import not_found, require, services_of
from fleetstream.api.rbac import Permission, Principal
from fleetstream.api.routes import Range
from fleetstream.api.store import QueryError

__all__ = ["MAX_STREAM_S", "POLL_S", "changed_rows", "router"]

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/live")
POLL_S = 2.0
MAX_STREAM_S = 600.0


def changed_rows(previous: dict[str, str], rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The rows that are new or differ from the last poll's (`previous` is updated: key → row as JSON)."""
    out = []
    for row in rows:
        text = json.dumps(row, sort_keys=True, default=str)
        if previous.get(str(row[key])) != text:
            previous[str(row[key])] = text
            out.append(row)
    return out


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


async def _stream(request: Request, name: str, key: str, poll: Callable[[], list[dict[str, Any]]],
                  poll_s: float, max_s: float) -> AsyncIterator[str]:
    seen: dict[str, str] = {}
    ends = time.monotonic() + max_s
    yield "retry: 3000\n\n"
    while time.monotonic() < ends and not await request.is_disconnected():
        try:
            rows = changed_rows(seen, await run_in_threadpool(poll), key)
        except QueryError as exc:  # the stream has started: say so on it and try again at the next poll
            log.error("live %s poll failed on %s: %s", name, request.url.path, exc)
            yield _event("error", {"detail": "the store could not answer; retrying"})
        else:
            yield _event(name, rows) if rows else ": idle\n\n"
        await asyncio.sleep(poll_s)


def _response(request: Request, name: str, key: str, poll: Callable[[], list[dict[str, Any]]]) -> StreamingResponse:
    state = request.app.state  # tests shorten both
    poll_s, max_s = float(getattr(state, "live_poll_s", POLL_S)), float(getattr(state, "live_max_s", MAX_STREAM_S))
    return StreamingResponse(_stream(request, name, key, poll, poll_s, max_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/alerts", tags=["live"], response_class=StreamingResponse)
def live_alerts(request: Request, rng: Range,
                who: Annotated[Principal, Depends(require(Permission.ALERTS_READ))]) -> StreamingResponse:
    """`alerts` events: alerts started since `from` (default 7 days ago) that are new or changed (fired,
    resolved, acknowledged), first all of them, then only changes. The range's end moves with time."""
    reader = services_of(request).reader

    def poll() -> list[dict[str, Any]]:
        return board.alert_board(reader, who, _until_now(rng), limit=500)

    return _response(request, "alerts", "alert_id", poll)


@router.get("/vehicles/{vehicle_id}/latest", tags=["live"], response_class=StreamingResponse)
def live_latest(vehicle_id: str, request: Request, rng: Range,
                who: Annotated[Principal, Depends(require(Permission.VEHICLES_READ))]) -> StreamingResponse:
    """`latest` events: channels of the vehicle whose newest sample changed since the previous poll."""
    reader = services_of(request).reader
    if not analytics.vehicle_exists(reader, who, vehicle_id):
        raise not_found(request, "no such vehicle")

    def poll() -> list[dict[str, Any]]:
        return board.latest_values(reader, who, vehicle_id, _until_now(rng))

    return _response(request, "latest", "channel", poll)


def _until_now(rng: DateRange) -> DateRange:
    """The range with its end moved up to now, so a stream keeps seeing what arrives after it was opened."""
    return DateRange(rng.start, max(rng.end, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)))
