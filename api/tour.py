"""The demo's visit to the read side: serve on a free loopback port, log in as two roles of two tenants, read,
try what must be refused, write a report, track an event and aggregate a KPI through the SDK, and count
what happened.

`api_denied` counts only the refusals the tour provokes on purpose (another tenant's vehicle, another
owner's vehicle); an unexpected answer to one of them makes the tour fail rather than be counted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from fleetstream.api.app import create_app
from fleetstream.api.rbac import Role
from fleetstream.api.sdk import AnalyticsClient
from fleetstream.api.services import Services
from fleetstream.api.users import UserStore
from fleetstream.config import Settings

__all__ = ["TourError", "api_tour"]

log = logging.getLogger(__name__)


class TourError(RuntimeError):
    """The read side answered something it must not (data across tenants or owners) or failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user(store: UserStore, name: str, password: str, org: str, role: Role, vehicles: tuple[str, ...]) -> None:
    if store.get(name) is None:
        store.add(name, password, org, role, vehicles)
    else:  # a demo run before this one made the user: same name, this run's password
        store.set_password(name, password)
        store.set_disabled(name, False)


def _login(client: httpx.Client, name: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": name, "password": password})
    if response.status_code != 200:
        raise TourError(f"login of {name} failed: {response.status_code} {response.text}")
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _expect(response: httpx.Response, status: int, what: str) -> httpx.Response:
    if response.status_code != status:
        raise TourError(f"{what}: expected {status}, got {response.status_code} {response.text[:300]}")
    return response


def _visit(client: httpx.Client, org: str, vehicles: list[str], password: str) -> dict[str, int]:
    manager = _login(client, "demo-fleet-manager", password)
    owner = _login(client, "demo-owner", password)
    outsider = _login(client, "demo-other-tenant", password)
    _expect(client.get("/api/v1/dashboards/fleet", headers=manager), 200, "fleet dashboard")
    _expect(client.get("/api/v1/metrics/alert-stats", headers=manager), 200, "alert stats")
    _expect(client.get(f"/api/v1/vehicles/{vehicles[0]}", headers=owner), 200, "owner's vehicle")
    denied = 0
    for headers, vehicle, who in ((outsider, vehicles[0], "another tenant"), (owner, vehicles[-1], "another owner")):
        _expect(client.get(f"/api/v1/vehicles/{vehicle}", headers=headers), 404, f"{who}'s vehicle")
        denied += 1
    other = _expect(client.get("/api/v1/dashboards/fleet", headers=outsider), 200, "other tenant's dashboard")
    if other.json()["fleet_summary"]["total_vehicles"] != 0:
        raise TourError(f"the other tenant sees vehicles of org {org}")
    report = _expect(client.post("/api/v1/reports/generate", headers=manager,
                                 json={"kind": "fleet_health", "format": "pdf"}), 201, "report")
    _expect(client.get(report.json()["download"], headers=manager), 200, "report download")
    asyncio.run(_sdk_visit(str(client.base_url), org, manager["Authorization"].removeprefix("Bearer ")))
    return {"api_denied": denied, "reports": 1}


async def _sdk_visit(base_url: str, org: str, token: str) -> None:
    """Seed 004's side through the async SDK: an event tracked (acknowledged by Kafka) and a KPI aggregated."""
    async with AnalyticsClient(org, token, base_url=base_url) as sdk:
        await sdk.events.track_page_view("/dashboards/fleet", user_id="demo-fleet-manager")
        await sdk.metrics.aggregate("health_score", "avg", "hour", source="kpi")


def api_tour(settings: Settings, org: str, vehicles: list[str]) -> dict[str, Any]:
    """Serve, visit as two roles of `org` and one of an empty tenant, stop; the demo summary's api_* counts."""
    if settings.api.jwt_secret is None:  # a demo without a configured secret gets one for this run only
        settings = settings.model_copy(update={"api": settings.api.model_copy(
            update={"jwt_secret": SecretStr(secrets.token_urlsafe(48))})})
    password = secrets.token_urlsafe(16)
    services = Services.start(settings)
    try:
        _user(services.users, "demo-fleet-manager", password, org, Role.FLEET_MANAGER, ())
        _user(services.users, "demo-owner", password, org, Role.OWNER, (vehicles[0],))
        _user(services.users, "demo-other-tenant", password, f"{org}-other", Role.FLEET_MANAGER, ())
        server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=_free_port(),
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, name="api-tour", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=120) as client:
                counts = _visit(client, org, vehicles, password)
        finally:
            server.should_exit = True
            thread.join(15)
        requests = int(sum(s.value for m in services.metrics.requests.collect() for s in m.samples
                           if s.name.endswith("_total")))
        return {"api_requests": requests, **counts}
    finally:
        services.close()
