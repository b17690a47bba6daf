"""The security suite, generated from the running server's OpenAPI schema (not a hand-kept list of endpoints).

For every operation that declares a security scheme: no credentials, an expired token, a forged signature,
`alg: none` and a bad API key get 401; a caller of the other tenant, and an owner asking for another owner's
vehicle, never get data (403/404, or an answer without a single identifier they must not see); SQL
metacharacters in every string parameter have no effect (no server error, no foreign rows, store intact).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from tests.api.conftest import World

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INJECTIONS = ("' OR '1'='1", "x') OR 1=1 --", "'; DROP TABLE fleetstream.samples; --", "{__orgs:Array(String)}",
              "@samples", "\\' UNION SELECT * FROM system.tables --", "*", "%", "\x00")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def path_params(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "path"]

    @property
    def string_query_params(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "query"
                and p.get("schema", {}).get("type") == "string" and p["name"] not in ("from", "to")]


def secured_operations(schema: dict[str, Any]) -> list[Operation]:
    return [Operation(method.upper(), path, spec) for path, item in schema["paths"].items()
            for method, spec in item.items() if spec.get("security")]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:
        node = next(n for n in node["anyOf"] if n.get("type") != "null")
        return _resolve(schema, node)
    return node


def example_body(schema: dict[str, Any], op: Operation) -> Any:
    """A minimal valid body for the operation, built from its schema: required fields only, lists at their
    minimum length, a value that fits each enum, pattern or type (so the request reaches the endpoint's work)."""
    body = op.spec.get("requestBody")
    if body is None:
        return None
    return _example(schema, body["content"]["application/json"]["schema"])


_STRINGS = ("x", "vehicle_id", "page_view")


def _example(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    node = _resolve(schema, node)
    if "enum" in node or "const" in node:
        return node["enum"][0] if "enum" in node else node["const"]
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return {name: _example(schema, node["properties"][name]) for name in node.get("required", [])}
    if kind == "array":
        return [_example(schema, node.get("items", {})) for _ in range(max(1, node.get("minItems", 1)))]
    if kind in ("number", "integer"):
        return max(1, node.get("minimum", 1))
    if kind == "boolean":
        return False
    pattern = node.get("pattern")
    return next((v for v in _STRINGS if pattern is None or re.match(pattern, v)), "x")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def schema(world: World) -> dict[str, Any]:
    with httpx.Client(base_url=world.base_url) as c:
        loaded: dict[str, Any] = c.get("/openapi.json").json()
    return loaded


@pytest.fixture(scope="module")
def report_a(world: World) -> str:
    with world.client("fm") as c:
        made = c.post("/api/v1/reports/generate", json={"kind": "fleet_health", "format": "csv"})
    assert made.status_code == 201
    with world.client("fm") as c:  # a saved segment of org A, for the path parameter `name`
        assert c.post("/api/v1/segments", json={"name": f"seg_{world.uid}", "rules": [
            {"field": "fleet_id", "operator": "eq", "value": "north"}]}).status_code == 201
    report_id: str = made.json()["report_id"]
    return report_id


def markers_a(world: World) -> set[str]:
    """Identifiers only org A's callers may see (the dyno cell and run belong to A, the default org)."""
    return {world.org_a, *world.vehicles_a, world.station, world.run_id,
            *(v for k, v in world.alerts.items() if k != "b1"),
            *(world.user_id(u) for u in ("admin", "fm", "owner", "tech", "exec", "support"))}


def markers_b(world: World) -> set[str]:
    return {world.org_b, world.vehicle_b, world.alerts["b1"],
            *(world.user_id(u) for u in ("fm_b", "admin_b", "owner_b"))}


def url_for(op: Operation, values: dict[str, str]) -> str:
    path = op.path
    for name in op.path_params:
        path = path.replace("{" + name + "}", values[name])
    return path


def _call(client: httpx.Client, schema: dict[str, Any], op: Operation, url: str, **kwargs: Any) -> httpx.Response:
    return client.request(op.method, url, json=example_body(schema, op), **kwargs)


def _params_of_a(world: World, report_id: str, vehicle: str | None = None) -> dict[str, str]:
    return {"vehicle_id": vehicle or world.vehicles_a[0], "user_id": world.user_id("owner"),
            "alert_id": world.alerts["a1"], "run_id": world.run_id, "report_id": report_id, "channel": "EngineSpeed",
            "name": f"seg_{world.uid}"}


def test_the_schema_lists_every_data_endpoint_as_secured(schema: dict[str, Any]) -> None:
    secured = {op.path for op in secured_operations(schema)}
    assert len(secured) >= 20
    for path in schema["paths"]:
        if path.startswith("/api/v1/") and path != "/api/v1/auth/login":
            assert path in secured, f"{path} declares no security scheme"


def _bad_credentials(world: World) -> Iterator[tuple[str, dict[str, str]]]:
    user = world.services.users.get(world.username("admin"))
    issuer = world.services.issuer
    expired, _ = issuer.issue(user.principal(), now_s=time.time() - 2 * issuer.ttl_s)
    good, _ = issuer.issue(user.principal())
    claims = jwt.decode(good, options={"verify_signature": False})
    yield "none", {}
    yield "expired", {"Authorization": f"Bearer {expired}"}
    yield "forged", {"Authorization": f"Bearer {jwt.encode(claims, 'not-the-secret-' * 4, algorithm='HS256')}"}
    yield "alg none", {"Authorization": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."}
    yield "tampered", {"Authorization": f"Bearer {good[:-4]}{'AAAA' if not good.endswith('AAAA') else 'BBBB'}"}
    yield "bad api key", {"X-API-Key": "fsk_0123456789ab_" + "x" * 43}
    yield "basic", {"Authorization": "Basic YWRtaW46YWRtaW4="}


def test_every_secured_operation_refuses_missing_and_bad_credentials(world: World, schema: dict[str, Any],
                                                                     report_a: str) -> None:
    ops = secured_operations(schema)
    with httpx.Client(base_url=world.base_url, timeout=60) as c:
        for label, headers in _bad_credentials(world):
            for op in ops:
                response = _call(c, schema, op, url_for(op, _params_of_a(world, report_a)), headers=headers)
                assert response.status_code in (401, 403), f"{label}: {op.method} {op.path} -> {response.status_code}"
                assert not markers_a(world) & set(_tokens(response.text)), f"{label}: {op.path} leaked"


def _tokens(text: str) -> list[str]:
    """Identifiers in a response body, whatever the JSON shape."""
    return [t.strip('"[]{},: ') for t in text.replace(",", " ").replace(":", " ").split()]


def _leaks(response: httpx.Response, forbidden: set[str]) -> set[str]:
    if response.status_code in (401, 403, 404, 422):
        return set()  # refusals and validation errors are not data
    return {m for m in forbidden if m in response.text}


@pytest.mark.parametrize("intruder", ["fm_b", "admin_b", "owner_b"])
def test_the_other_tenant_never_gets_data(world: World, schema: dict[str, Any], report_a: str, intruder: str) -> None:
    forbidden = markers_a(world)
    with world.client(intruder) as c:
        for op in secured_operations(schema):
            response = _call(c, schema, op, url_for(op, _params_of_a(world, report_a)), params=world.range_params)
            assert response.status_code < 500, f"{op.method} {op.path}: {response.status_code} {response.text}"
            if op.path_params:
                assert response.status_code in (403, 404), f"{intruder}: {op.method} {op.path} -> {response.text}"
            leaked = _leaks(response, forbidden)
            assert not leaked, f"{intruder}: {op.method} {op.path} leaked {leaked}"


def test_an_owner_never_gets_another_vehicle(world: World, schema: dict[str, Any], report_a: str) -> None:
    """The owner of a1 asks for a2 (same org) and for beta's b1, on every operation."""
    forbidden = {world.vehicles_a[1], world.vehicles_a[2], world.alerts["a2"], world.alerts["a3"], world.station,
                 world.run_id} | markers_b(world)
    with world.client("owner") as c:
        for target in (world.vehicles_a[1], world.vehicle_b):
            values = {**_params_of_a(world, report_a, target), "alert_id": world.alerts["a2"],
                      "user_id": world.user_id("owner_b")}
            for op in secured_operations(schema):
                response = _call(c, schema, op, url_for(op, values), params=world.range_params)
                assert response.status_code < 500, f"{op.method} {op.path}: {response.text}"
                if op.path_params:
                    assert response.status_code in (403, 404), f"{op.method} {url_for(op, values)} -> {response.text}"
                assert not _leaks(response, forbidden), f"{op.method} {op.path} leaked {_leaks(response, forbidden)}"


def test_sql_metacharacters_in_every_filter_have_no_effect(world: World, schema: dict[str, Any],
                                                           report_a: str) -> None:
    before = world.sql("SELECT count() AS n FROM fleetstream.samples")[0]["n"]
    forbidden = markers_b(world)
    with world.client("admin") as c:
        for op in secured_operations(schema):
            names = op.path_params + op.string_query_params
            for name in names:
                for payload in INJECTIONS:
                    values = {**_params_of_a(world, report_a), name: payload}
                    query = {**world.range_params, **({name: payload} if name in op.string_query_params else {})}
                    url = url_for(op, {k: quote(v, safe="") for k, v in values.items()})
                    response = _call(c, schema, op, url, params=query)
                    assert response.status_code < 500, f"{op.method} {op.path} {name}={payload!r}: {response.text}"
                    if name in op.path_params and response.status_code == 200:
                        # an id that names nothing is a 404; a channel that names nothing is an empty series
                        assert name == "channel" and response.json()["windows"] == [], \
                            f"{op.method} {op.path} with {name}={payload!r} answered 200: {response.text}"
                    assert not _leaks(response, forbidden), f"{op.path} {name}={payload!r} leaked"
    assert world.sql("SELECT count() AS n FROM fleetstream.samples")[0]["n"] == before
    assert world.sql("SELECT count() AS n FROM system.tables WHERE database = 'fleetstream'")[0]["n"] > 10


def test_an_injection_in_a_filter_matches_nothing_rather_than_everything(world: World) -> None:
    with world.client("admin") as c:
        everyone = c.get("/api/v1/audit/logs", params={"refresh": "true"}).json()
        injected = c.get("/api/v1/audit/logs", params={"user_id": "' OR '1'='1"}).json()
    assert everyone and injected == []
