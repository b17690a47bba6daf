"""`fleetstream serve` on the real broker and chDB: data of two tenants in through Kafka and the sink, read back
over HTTP with each role, and equal to SQL computed directly on the tables."""

from __future__ import annotations

import csv
import io
import socket
import time
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from fleetstream.api.throttle import LoginThrottle
from tests.api.conftest import PASSWORD, World

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _in(ids: list[str]) -> str:
    return "(" + ", ".join(f"'{i}'" for i in ids) + ")"  # test-made ids only (hex suffixes)


def _expected_health(world: World, vehicles: list[str]) -> dict[str, float]:
    rows = world.sql(f"""SELECT scope_id, argMax(value, period_end) AS h FROM fleetstream.kpis
                         WHERE scope = 'vehicle' AND name = 'health_score' AND scope_id IN {_in(vehicles)}
                         GROUP BY scope_id""")
    return {r["scope_id"]: r["h"] for r in rows}


def test_fleet_dashboard_of_each_tenant_equals_direct_sql(world: World) -> None:
    health = _expected_health(world, world.vehicles_a)
    expected_total = world.sql(f"""SELECT uniqExact(vehicle_id) AS n FROM (
        SELECT vehicle_id FROM fleetstream.samples WHERE org_id = '{world.org_a}' OR vehicle_id = '{world.station}'
        UNION ALL SELECT vehicle_id FROM fleetstream.dtcs WHERE org_id = '{world.org_a}')""")[0]["n"]
    with world.client("fm") as c:
        body = c.get("/api/v1/dashboards/fleet", params={**world.range_params, "refresh": "true"}).json()
    summary = body["fleet_summary"]
    assert summary["total_vehicles"] == expected_total == 4  # three vehicles and the default org's dyno cell
    assert summary["active_vehicles"] == 2  # a1 and a2 sent data in the range's last hour
    assert summary["average_health_score"] == pytest.approx(sum(health.values()) / len(health) / 100)
    assert summary["critical_alerts"] == 1 and summary["open_alerts"] == 2
    assert body["health_distribution"] == {"excellent": 0, "good": 1, "fair": 1, "poor": 0, "critical": 1}
    assert body["top_issues"][0]["component"] == "P0301" and body["top_issues"][0]["affected_vehicles"] == 2
    assert body["data_quality"]["dead_lettered"] == {"out_of_range": 3}  # b1's dead letter is not ours
    assert world.vehicle_b not in str(body)
    with world.client("fm_b") as c:
        other = c.get("/api/v1/dashboards/fleet", params=world.range_params).json()
    assert other["fleet_summary"]["total_vehicles"] == 1
    assert other["fleet_summary"]["average_health_score"] == pytest.approx(0.99)
    assert not any(v in str(other) for v in world.vehicles_a)


def test_dashboard_health_trend_and_scores_from_one_scan_equal_direct_sql(world: World) -> None:
    trend = world.sql(f"""SELECT toDate(period_end) AS day, avg(value) AS mean_health,
                                 uniqExact(scope_id) AS vehicles
                          FROM fleetstream.kpis WHERE scope = 'vehicle' AND name = 'health_score'
                          AND scope_id IN {_in(world.vehicles_a)} GROUP BY day ORDER BY day""")
    with world.client("fm") as c:
        body = c.get("/api/v1/dashboards/fleet", params={**world.range_params, "refresh": "true"}).json()
    assert [(d["day"], d["vehicles"]) for d in body["health_trend"]] == [(t["day"], t["vehicles"]) for t in trend]
    assert [d["mean_health"] for d in body["health_trend"]] == pytest.approx([t["mean_health"] for t in trend])
    assert {v["vehicle_id"]: v["health"] for v in body["vehicle_health"]} == _expected_health(world,
                                                                                               world.vehicles_a)
    a1, a2, a3 = world.vehicles_a
    assert {v["vehicle_id"]: v["band"] for v in body["vehicle_health"]} == {a1: "fair", a2: "good", a3: "critical"}


def test_alert_stats_equal_direct_sql(world: World) -> None:
    episodes = world.sql(f"""SELECT alert_id, any(severity) AS severity, min(started) AS started,
                                    minIf(ended, event = 'resolved') AS resolved
                             FROM fleetstream.alerts WHERE key IN {_in(world.vehicles_a)} GROUP BY alert_id""")
    resolved = [e for e in episodes if e["resolved"]]
    with world.client("exec") as c:
        stats = c.get("/api/v1/metrics/alert-stats", params={**world.range_params, "refresh": "true"}).json()
    total = stats["total"]
    assert total["alerts"] == len(episodes) == 3
    assert total["resolved"] == len(resolved) == 1
    assert total["mean_resolution_ms"] == pytest.approx(600_000)


def test_uptime_and_health_metrics_equal_direct_sql(world: World) -> None:
    expected = world.sql(f"""SELECT scope_id, avg(value) AS u FROM fleetstream.kpis WHERE name = 'uptime_pct'
                             AND scope_id IN {_in(world.vehicles_a)} GROUP BY scope_id ORDER BY scope_id""")
    with world.client("exec") as c:
        uptime = c.get("/api/v1/metrics/uptime", params=world.range_params).json()
        health = c.get("/api/v1/metrics/fleet-health", params=world.range_params).json()
    assert [(v["vehicle_id"], v["uptime_pct"]) for v in uptime["vehicles"]] == [(r["scope_id"], r["u"])
                                                                                for r in expected]
    assert uptime["fleet_uptime_pct"] == pytest.approx(sum(r["u"] for r in expected) / len(expected))
    assert {v["vehicle_id"]: v["health"] for v in health["vehicles"]} == _expected_health(world, world.vehicles_a)
    assert health["needs_attention"] == [world.vehicles_a[2]]


def test_owner_sees_only_their_vehicle(world: World) -> None:
    a1, a2, _ = world.vehicles_a
    with world.client("owner") as c:
        dash = c.get(f"/api/v1/dashboards/owner/{world.user_id('owner')}", params=world.range_params)
        assert dash.status_code == 200
        assert [v["vehicle_id"] for v in dash.json()["vehicles"]] == [a1]
        assert dash.json()["vehicles"][0]["health_score"] == _expected_health(world, [a1])[a1]
        assert c.get(f"/api/v1/vehicles/{a1}", params=world.range_params).status_code == 200
        for vehicle in (a2, world.vehicle_b):
            assert c.get(f"/api/v1/vehicles/{vehicle}", params=world.range_params).status_code == 404
            assert c.get(f"/api/v1/vehicles/{vehicle}/channels/EngineSpeed/windows").status_code == 404
        assert [v["vehicle_id"] for v in c.get("/api/v1/vehicles").json()] == [a1]
        assert {a["vehicle_id"] for a in c.get("/api/v1/alerts", params=world.range_params).json()} <= {a1}
        # another owner's dashboard, or the fleet's: refused
        assert c.get(f"/api/v1/dashboards/owner/{world.user_id('owner_b')}").status_code == 404
        assert c.get("/api/v1/dashboards/fleet").status_code == 403


def test_support_and_admin_may_look_at_an_owner_of_their_org_only(world: World) -> None:
    for user in ("support", "admin"):
        with world.client(user) as c:
            mine = c.get(f"/api/v1/dashboards/owner/{world.user_id('owner')}", params=world.range_params)
            assert [v["vehicle_id"] for v in mine.json()["vehicles"]] == [world.vehicles_a[0]]
            assert c.get(f"/api/v1/dashboards/owner/{world.user_id('owner_b')}").status_code == 404


def test_drill_down_fleet_vehicle_channel_windows(world: World) -> None:
    a1 = world.vehicles_a[0]
    expected = world.sql(f"SELECT count() AS n, min(value) AS lo, max(value) AS hi FROM fleetstream.samples "
                         f"WHERE vehicle_id = '{a1}' AND channel = 'EngineSpeed'")[0]
    with world.client("fm") as c:
        vehicle = c.get(f"/api/v1/vehicles/{a1}", params=world.range_params).json()
        channel = vehicle["channels"][0]
        assert (channel["channel"], channel["samples"], channel["min"], channel["max"]) == (
            "EngineSpeed", expected["n"], expected["lo"], expected["hi"])
        windows = c.get(f"/api/v1/vehicles/{a1}/channels/EngineSpeed/windows", params=world.range_params).json()
    assert len(windows["windows"]) == 3 and windows["windows"][0]["p95"] == 1450.0


def test_dyno_runs_and_curves(world: World) -> None:
    with world.client("fm") as c:
        runs = c.get("/api/v1/dyno/runs", params=world.range_params).json()
        run = c.get(f"/api/v1/dyno/runs/{world.run_id}", params={"points": 2}).json()
    assert [(r["run_id"], r["peak_hp"], r["peak_torque_ftlb"], r["max_rpm"]) for r in runs] == [
        (world.run_id, 310.5, 420.0, 6000.0)]
    assert {k: len(v) for k, v in run["curves"].items()} == {"engine_speed": 2, "power": 2, "torque": 2}
    with world.client("fm_b") as c:  # the cell belongs to the default org (acme), not to beta
        assert c.get("/api/v1/dyno/runs", params=world.range_params).json() == []
        assert c.get(f"/api/v1/dyno/runs/{world.run_id}").status_code == 404


def test_acknowledgement_reaches_clickhouse_and_moves_time_to_acknowledge(world: World) -> None:
    alert = world.alerts["a2"]
    with world.client("tech") as c:
        before = c.get("/api/v1/metrics/alert-stats", params=world.range_params)
        assert before.status_code == 403  # technicians have no metrics
        other = c.post(f"/api/v1/alerts/{world.alerts['a3']}/acknowledge")  # not their vehicle
        assert other.status_code == 404
        ack = c.post(f"/api/v1/alerts/{alert}/acknowledge", json={"note": "on it"})
    assert ack.status_code == 202, ack.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not world.sql(
            f"SELECT alert_id FROM fleetstream.alert_acks WHERE alert_id = '{alert}'"):
        time.sleep(0.5)
    row = world.sql(f"SELECT org_id, key, user_id, note FROM fleetstream.alert_acks WHERE alert_id = '{alert}'")
    assert row == [{"org_id": world.org_a, "key": world.vehicles_a[1], "user_id": world.user_id("tech"),
                    "note": "on it"}]
    with world.client("fm") as c:
        stats = c.get("/api/v1/metrics/alert-stats", params={**world.range_params, "refresh": "true"}).json()
    warning = next(s for s in stats["by_severity"] if s["severity"] == "warning")
    assert warning["acknowledged"] == warning["acknowledged_by_people"] == 1
    expected_ms = ack.json()["acknowledged_ms"] - (world.t0_ms + 30 * 60_000)
    assert warning["mean_time_to_ack_ms"] == pytest.approx(expected_ms, abs=1)
    with world.client("fm_b") as c:
        assert c.post(f"/api/v1/alerts/{alert}/acknowledge").status_code == 404


def test_every_request_is_audited_and_only_admins_read_the_audit(world: World) -> None:
    with world.client("fm") as c:
        c.get("/api/v1/users/me")
        assert c.get("/api/v1/audit/logs").status_code == 403
    deadline = time.monotonic() + 60
    entries: list[dict[str, Any]] = []
    with world.client("admin") as c:
        while time.monotonic() < deadline:
            entries = c.get("/api/v1/audit/logs", params={"user_id": world.user_id("fm")}).json()
            if any(e["path"] == "/api/v1/audit/logs" and e["status"] == 403 for e in entries):
                break
            time.sleep(0.5)
        assert any(e["path"] == "/api/v1/users/me" and e["status"] == 200 and e["role"] == "fleet_manager"
                   for e in entries)
        activity = c.get(f"/api/v1/audit/user-activity/{world.user_id('fm')}").json()
        assert {e["user_id"] for e in activity} == {world.user_id("fm")}
        assert c.get(f"/api/v1/audit/user-activity/{world.user_id('fm_b')}").status_code == 404
    with world.client("admin_b") as c:  # beta's admin sees none of acme's audit entries
        assert all(e["user_id"] != world.user_id("fm") for e in c.get("/api/v1/audit/logs").json())


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "pdf"])
def test_reports_are_generated_and_downloaded_by_their_org_only(world: World, fmt: str) -> None:
    range_ = {"from": world.range_params["from"], "to": world.range_params["to"]}
    with world.client("fm") as c:
        made = c.post("/api/v1/reports/generate", json={"kind": "fleet_health", "format": fmt, **range_})
        assert made.status_code == 201, made.text
        assert made.json()["rows"] == 3
        download = c.get(made.json()["download"])
    assert download.status_code == 200
    if fmt == "csv":
        table = list(csv.DictReader(io.StringIO(download.text)))
        assert {r["vehicle_id"]: float(r["health"]) for r in table} == _expected_health(world, world.vehicles_a)
    elif fmt == "xlsx":
        sheet = load_workbook(io.BytesIO(download.content)).active
        assert sheet is not None and sheet.max_row == 4 and sheet._charts
    else:
        assert download.content.startswith(b"%PDF")
    with world.client("fm_b") as c:
        assert c.get(made.json()["download"]).status_code == 404


def test_report_over_the_row_limit_is_refused(world: World) -> None:
    limit = world.services.reports.max_rows
    world.services.reports.max_rows = 2
    try:
        with world.client("fm") as c:
            refused = c.post("/api/v1/reports/generate", json={"kind": "fleet_health", **world.range_params})
        assert refused.status_code == 422 and "more than 2 rows" in refused.text
    finally:
        world.services.reports.max_rows = limit


def test_cache_answers_repeats_and_refresh_recomputes(world: World) -> None:
    params = {**world.range_params, "probe": "cache"}
    with world.client("exec") as c:
        first = c.get("/api/v1/metrics/uptime", params=params)
        second = c.get("/api/v1/metrics/uptime", params=params)
        fresh = c.get("/api/v1/metrics/uptime", params={**params, "refresh": "true"})
    assert (first.headers["X-Cache"], second.headers["X-Cache"], fresh.headers["X-Cache"]) == ("miss", "hit", "miss")
    assert first.json() == second.json() == fresh.json()
    with world.client("fm_b") as c:  # same path and parameters, other tenant: not the cached answer
        other = c.get("/api/v1/metrics/uptime", params=params)
    assert other.status_code == 403 or other.json() != first.json()


def test_disabled_user_is_refused_at_once_and_api_keys_work(world: World) -> None:
    token = world.token("support")
    services = world.services
    key, _ = services.users.add_api_key(world.username("exec"))
    with httpx.Client(base_url=world.base_url, timeout=30) as c:
        assert c.get("/api/v1/users/me", headers={"X-API-Key": key}).json()["role"] == "executive"
        assert c.get("/api/v1/users/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/api/v1/users/me", headers={"X-API-Key": key[:-2] + "xx"}).status_code == 401
        services.users.set_disabled(world.username("support"))
        try:
            assert c.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
            login = c.post("/api/v1/auth/login", json={"username": world.username("support"), "password": PASSWORD})
            assert login.status_code == 401
        finally:
            services.users.set_disabled(world.username("support"), False)


def test_repeated_failed_logins_are_slowed(world: World) -> None:
    name = world.username("owner_b")
    api = world.settings.api
    world.services.throttle = LoginThrottle(api.login_free_failures, api.login_max_delay_s)  # forget other tests
    with httpx.Client(base_url=world.base_url, timeout=30) as c:
        codes = [c.post("/api/v1/auth/login", json={"username": name, "password": f"wrong-{i}"}).status_code
                 for i in range(world.settings.api.login_free_failures + 1)]
        throttled = c.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert codes == [401] * world.settings.api.login_free_failures + [429]  # not even checked any more
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    world.services.throttle = LoginThrottle(api.login_free_failures, api.login_max_delay_s)


def test_health_and_prometheus_metrics(world: World) -> None:
    with httpx.Client(base_url=world.base_url, timeout=30) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/health/live").status_code == 200
        ready = c.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["clickhouse"] == "ok (sink-endpoint)" and ready.json()["kafka"] == "ok"
        metrics = c.get("/metrics").text
        assert c.get("/docs").status_code == 200 and "/api/v1/dashboards/fleet" in c.get("/openapi.json").text
    assert "fleetstream_api_requests_total" in metrics and "fleetstream_api_denied_total" in metrics


def _get(conn: socket.socket, path: str) -> bytes:
    """One HTTP/1.1 request on a kept-alive connection; the response head (b'' when the server had closed it)."""
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            return head
        head += chunk
    return head


def test_an_idle_kept_alive_connection_outlives_the_clients_pool_expiry(world: World) -> None:
    """httpx (and the SDK) reuse an idle connection for 5 s: a server closing it at the same 5 s races the next
    request, and the client sees "server disconnected without sending a response"."""
    host, port = world.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        assert _get(conn, "/health/live").startswith(b"HTTP/1.1 200")
        time.sleep(6.5)  # longer than httpx's keepalive_expiry and uvicorn's default keep-alive timeout
        assert _get(conn, "/health/live").startswith(b"HTTP/1.1 200")
