"""An async Python client for `fleetstream serve` (seed 004's `AnalyticsClient`), on httpx.

    async with AnalyticsClient("acme", base_url="http://127.0.0.1:8080") as client:
        await client.login("fm", "password")           # or AnalyticsClient("acme", token=...) / api_key=...
        await client.events.track("page_view", "dashboard", user_id="u1")
        await client.metrics.create_metric("active_users", "gauge", unit="users")
        await client.metrics.set_gauge("active_users", 150)
        rows = await client.metrics.aggregate("active_users", "avg", "hour")
        fleet = await client.dashboards.fleet()

The tenant is checked, not trusted: the server scopes every call to the org of the credentials, and the client
refuses credentials of another org than the `tenant` it was made for (TenantMismatch), so a token mixed up
between tenants fails at once instead of reading the wrong tenant's data. Every failed call raises
AnalyticsError with the server's status and reason. Only httpx is needed (no server dependencies).
"""

from __future__ import annotations

import datetime as dt
from types import TracebackType
from typing import Any

import httpx

__all__ = ["AnalyticsClient", "AnalyticsError", "TenantMismatch"]


class AnalyticsError(RuntimeError):
    """The server refused or failed a call; `status` is the HTTP status, the message the server's reason."""

    def __init__(self, status: int, detail: str, method: str, path: str):
        super().__init__(f"{method} {path}: {status} {detail}")
        self.status = status
        self.detail = detail


class TenantMismatch(AnalyticsError):
    """The credentials belong to another org than the client's tenant."""


def _iso(value: dt.datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _without_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class AnalyticsClient:
    """The API of one tenant: `events`, `metrics`, `segments`, `dashboards`, `reports`, plus `login` and `me`."""

    def __init__(self, tenant: str, token: str | None = None, *, api_key: str | None = None,
                 base_url: str = "http://127.0.0.1:8080", timeout_s: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.tenant = tenant
        self._token = token
        self._api_key = api_key
        self._verified = False
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/api/v1", timeout=timeout_s,
                                       transport=transport)
        self.events = Events(self)
        self.metrics = Metrics(self)
        self.segments = Segments(self)
        self.dashboards = Dashboards(self)
        self.reports = Reports(self)

    async def __aenter__(self) -> AnalyticsClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Exchange a username and password for a token (kept by the client); TenantMismatch for another org."""
        body: dict[str, Any] = await self._call("POST", "/auth/login", json={"username": username,
                                                                            "password": password}, auth=False)
        self._check_tenant(body["org_id"], "/auth/login")
        self._token, self._api_key, self._verified = body["access_token"], None, True
        return body

    async def me(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._call("GET", "/users/me")
        return body

    def _headers(self) -> dict[str, str]:
        if self._api_key:
            return {"X-API-Key": self._api_key}
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def _check_tenant(self, org_id: str, path: str) -> None:
        if org_id != self.tenant:
            raise TenantMismatch(403, f"the credentials are of org {org_id!r}, this client is for {self.tenant!r}",
                                 "CHECK", path)

    async def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        if auth and not self._verified:  # once per client: whose credentials these are
            response = await self._http.get("/users/me", headers=self._headers())
            self._raise_for(response, "GET", "/users/me")
            self._check_tenant(response.json()["org_id"], "/users/me")
            self._verified = True
        response = await self._http.request(method, path, headers=self._headers() if auth else {}, **kwargs)
        self._raise_for(response, method, path)
        return response.json() if response.headers.get("content-type", "").startswith("application/json") \
            else response.content

    @staticmethod
    def _raise_for(response: httpx.Response, method: str, path: str) -> None:
        if response.is_success:
            return
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise AnalyticsError(response.status_code, str(detail), method, path)


class _Part:
    def __init__(self, client: AnalyticsClient):
        self._client = client

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._client._call(method, path, **kwargs)


class Events(_Part):
    async def track(self, event_type: str, event_name: str, *, user_id: str = "", session_id: str = "",
                    vehicle_id: str = "", properties: dict[str, Any] | None = None,
                    context: dict[str, Any] | None = None, timestamp: dt.datetime | None = None,
                    event_id: str | None = None, source: str = "") -> dict[str, Any]:
        """Track one event; returns once the broker has it ({accepted, event_ids})."""
        event = _without_none(event_type=event_type, event_name=event_name, user_id=user_id, session_id=session_id,
                              vehicle_id=vehicle_id, properties=properties or {}, context=context or {},
                              timestamp=_iso(timestamp), event_id=event_id, source=source)
        result: dict[str, Any] = await self._call("POST", "/events/track", json=event)
        return result

    async def track_batch(self, events: list[dict[str, Any]], source: str = "") -> dict[str, Any]:
        """Track many events (dicts shaped like `track`'s arguments); all or an AnalyticsError."""
        body = [{**e, "timestamp": _iso(e.get("timestamp"))} if e.get("timestamp") else e for e in events]
        result: dict[str, Any] = await self._call("POST", "/events/track/batch", json={"events": body,
                                                                                      "source": source})
        return result

    async def track_page_view(self, page_url: str, *, user_id: str = "", **more: Any) -> dict[str, Any]:
        return await self.track("page_view", page_url, user_id=user_id, properties={"page_url": page_url}, **more)

    async def track_click(self, element: str, *, user_id: str = "", **more: Any) -> dict[str, Any]:
        return await self.track("click", element, user_id=user_id, **more)

    async def track_conversion(self, name: str, *, value: float | None = None, user_id: str = "",
                               **more: Any) -> dict[str, Any]:
        properties = {} if value is None else {"value": value}
        return await self.track("conversion", name, user_id=user_id, properties=properties, **more)

    async def get_events(self, *, event_type: str | None = None, event_name: str | None = None,
                         user_id: str | None = None, session_id: str | None = None, vehicle_id: str | None = None,
                         start_time: dt.datetime | None = None, end_time: dt.datetime | None = None,
                         limit: int = 100) -> list[dict[str, Any]]:
        query = _without_none(event_type=event_type, event_name=event_name, user_id=user_id, session_id=session_id,
                              vehicle_id=vehicle_id, start_time=_iso(start_time), end_time=_iso(end_time),
                              limit=limit)
        rows: list[dict[str, Any]] = await self._call("POST", "/events/query", json=query)
        return rows

    async def funnel_analysis(self, funnel_steps: list[str], *, start_time: dt.datetime | None = None,
                              end_time: dt.datetime | None = None, step_field: str = "event_type",
                              actor: str = "user_id", window_s: int = 86_400) -> dict[str, Any]:
        spec = _without_none(funnel_steps=funnel_steps, start_time=_iso(start_time), end_time=_iso(end_time),
                             step_field=step_field, actor=actor, window_s=window_s)
        result: dict[str, Any] = await self._call("POST", "/events/funnel", json=spec)
        return result


class Metrics(_Part):
    async def create_metric(self, name: str, metric_type: str, *, display_name: str = "", unit: str = "",
                            dimensions: list[str] | None = None, description: str = "",
                            tags: dict[str, str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/metrics", json={
            "name": name, "metric_type": metric_type, "display_name": display_name, "unit": unit,
            "dimensions": dimensions or [], "description": description, "tags": tags or {}})
        return result

    async def list_metrics(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/metrics")
        return result

    async def record_value(self, metric_id: str, value: float, *, dimensions: dict[str, str] | None = None,
                           timestamp: dt.datetime | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/metrics/values", json=_without_none(
            metric_id=metric_id, value=value, dimensions=dimensions or {}, timestamp=_iso(timestamp)))
        return result

    async def record_values(self, values: list[dict[str, Any]]) -> dict[str, Any]:
        body = [{**v, "timestamp": _iso(v.get("timestamp"))} if v.get("timestamp") else v for v in values]
        result: dict[str, Any] = await self._call("POST", "/metrics/values/batch", json={"values": body})
        return result

    async def increment(self, metric_id: str, value: float = 1, **more: Any) -> dict[str, Any]:
        return await self.record_value(metric_id, value, **more)

    async def set_gauge(self, metric_id: str, value: float, **more: Any) -> dict[str, Any]:
        return await self.record_value(metric_id, value, **more)

    async def record_timing(self, metric_id: str, duration_ms: float, **more: Any) -> dict[str, Any]:
        return await self.record_value(metric_id, duration_ms, **more)

    async def aggregate(self, metric_id: str, aggregation_method: str = "sum", granularity: str = "hour", *,
                        start_time: dt.datetime | None = None, end_time: dt.datetime | None = None,
                        source: str = "custom", filters: dict[str, str] | None = None,
                        group_by: list[str] | None = None, refresh: bool = False) -> dict[str, Any]:
        """Answered from the server's 5-minute cache unless `refresh`."""
        refreshing = {"refresh": str(refresh).lower()}
        result: dict[str, Any] = await self._call("POST", "/metrics/aggregate", params=refreshing, json=_without_none(
            metric_id=metric_id, aggregation_method=aggregation_method, granularity=granularity,
            start_time=_iso(start_time), end_time=_iso(end_time), source=source, filters=filters or {},
            group_by=group_by or []))
        return result


class Segments(_Part):
    async def create_segment(self, name: str, rules: list[dict[str, Any]], *, match: str = "all",
                             display_name: str = "") -> dict[str, Any]:
        """Rules are {field, operator, value}; see the API's /docs for the fields and operators."""
        result: dict[str, Any] = await self._call("POST", "/segments", json={
            "name": name, "rules": rules, "match": match, "display_name": display_name})
        return result

    async def list_segments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/segments")
        return result

    async def members(self, name: str, *, start_time: dt.datetime | None = None,
                      end_time: dt.datetime | None = None) -> list[dict[str, Any]]:
        body = await self._call("GET", f"/segments/{name}/members",
                                params=_without_none(**{"from": _iso(start_time), "to": _iso(end_time)}))
        vehicles: list[dict[str, Any]] = body["vehicles"]
        return vehicles


class Dashboards(_Part):
    async def _get(self, path: str, start_time: dt.datetime | None, end_time: dt.datetime | None,
                   refresh: bool) -> dict[str, Any]:
        params = _without_none(**{"from": _iso(start_time), "to": _iso(end_time)})
        result: dict[str, Any] = await self._call("GET", path, params={**params, "refresh": str(refresh).lower()})
        return result

    async def fleet(self, start_time: dt.datetime | None = None, end_time: dt.datetime | None = None,
                    refresh: bool = False) -> dict[str, Any]:
        return await self._get("/dashboards/fleet", start_time, end_time, refresh)

    async def executive(self, start_time: dt.datetime | None = None, end_time: dt.datetime | None = None,
                        refresh: bool = False) -> dict[str, Any]:
        return await self._get("/dashboards/executive", start_time, end_time, refresh)

    async def owner(self, user_id: str, start_time: dt.datetime | None = None, end_time: dt.datetime | None = None,
                    refresh: bool = False) -> dict[str, Any]:
        return await self._get(f"/dashboards/owner/{user_id}", start_time, end_time, refresh)

    async def technician(self, user_id: str, start_time: dt.datetime | None = None,
                         end_time: dt.datetime | None = None, refresh: bool = False) -> dict[str, Any]:
        return await self._get(f"/dashboards/technician/{user_id}", start_time, end_time, refresh)


class Reports(_Part):
    async def generate_report(self, kind: str, format: str = "csv", *, start_time: dt.datetime | None = None,
                              end_time: dt.datetime | None = None,
                              vehicle_ids: list[str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/reports/generate", json=_without_none(
            kind=kind, format=format, vehicle_ids=vehicle_ids or [], **{"from": _iso(start_time),
                                                                          "to": _iso(end_time)}))
        return result

    async def download(self, report_id: str) -> bytes:
        content: bytes = await self._call("GET", f"/reports/{report_id}/download")
        return content
