"""The FastAPI application of `fleetstream serve`: login, health, Prometheus metrics, audit, and the `/api/v1` routes.

Every request, answered or refused, becomes one audit entry on the audit topic (who, tenant, method, path,
query, status, duration), which the ClickHouse sink stores in `audit_log`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka.admin import AdminClient
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from fleetstream.api import analytics_routes, board, live
from fleetstream.api.pages import mount_pages
from fleetstream.api.routes import router
from fleetstream.api.services import Services
from fleetstream.api.store import QueryError

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="fleetstream read API",
                  description="Dashboards, KPIs, alerts, drill-down, dyno runs, audit and reports over the "
                              "pipeline's ClickHouse store, per tenant and role.", version="1")
    app.state.services = services
    app.include_router(router)
    app.include_router(board.router)
    app.include_router(live.router)
    mount_pages(app)
    app.include_router(analytics_routes.router)
    _add_login(app)
    _add_health(app)
    app.middleware("http")(_audited)
    app.exception_handler(QueryError)(_store_failed)
    return app


async def _store_failed(request: Request, exc: Exception) -> JSONResponse:
    """A failed ClickHouse read is the server's problem: 503 with a reference, details only in the log."""
    reference = uuid.uuid4().hex[:12]
    log.error("store query failed (%s) on %s: %s", reference, request.url.path, exc)
    return JSONResponse({"detail": f"the store could not answer (reference {reference})"}, status_code=503)


def _add_login(app: FastAPI) -> None:
    @app.post("/api/v1/auth/login", tags=["auth"])
    def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
        """A JWT for a username and password; repeated failures make further attempts wait (429)."""
        services: Services = request.app.state.services
        client = request.client.host if request.client else ""
        wait = services.throttle.wait_s(body.username, client)
        if wait > 0:
            services.metrics.denied.labels("throttled").inc()
            raise HTTPException(429, f"too many failed logins; retry in {wait:.0f} s",
                                headers={"Retry-After": str(int(wait) + 1)})
        user = services.users.authenticate(body.username, body.password)
        if user is None:
            services.throttle.failed(body.username, client)
            services.metrics.denied.labels("bad_login").inc()
            raise HTTPException(401, "invalid username or password")
        services.throttle.succeeded(body.username)
        request.state.principal = user.principal()
        token, exp = services.issuer.issue(user.principal())
        return {"access_token": token, "token_type": "bearer", "expires_at": exp, "user_id": user.user_id,
                "role": user.role.value, "org_id": user.org_id}


def _add_health(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"])
    def ready(request: Request) -> JSONResponse:
        """ClickHouse answers a query and the Kafka cluster answers a metadata request."""
        services: Services = request.app.state.services
        checks: dict[str, str] = {}
        try:
            checks["clickhouse"] = f"ok ({services.reader.ping()})"
        except Exception as exc:
            checks["clickhouse"] = f"unavailable: {exc}"
        try:
            AdminClient(services.settings.kafka.client()).list_topics(timeout=3)
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"unavailable: {exc}"
        ok = all(v.startswith("ok") for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _audited(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        duration_ms = (time.perf_counter() - started) * 1000
        await run_in_threadpool(_record, request, status, duration_ms)


def _record(request: Request, status: int, duration_ms: float) -> None:
    services: Services = request.app.state.services
    route = request.scope.get("route")
    template = getattr(route, "path", "unmatched")
    services.metrics.requests.labels(request.method, template, str(status)).inc()
    services.metrics.latency.labels(template).observe(duration_ms / 1000)
    if services.publisher is None or template in ("/metrics", "/health", "/health/live", "/health/ready"):
        return
    who = getattr(request.state, "principal", None)
    entry: dict[str, Any] = {"request_id": uuid.uuid4().hex, "ts_ms": int(time.time() * 1000),
             "org_id": who.org_id if who else "", "user_id": who.user_id if who else "",
             "role": who.role.value if who else "", "auth": who.auth if who else "none",
             "method": request.method, "path": request.url.path, "query": str(request.url.query)[:4000],
             "status": status, "duration_ms": round(duration_ms, 3),
             "client": request.client.host if request.client else ""}
    try:
        services.publisher.send(services.settings.api.audit_topic, "audit_entry", str(entry["org_id"] or "-"), entry)
    except Exception as exc:  # BufferError, KafkaException: the entry is logged instead of lost
        services.metrics.publish_failures.labels(services.settings.api.audit_topic).inc()
        log.error("audit entry not queued (%s): %s", exc, entry)
