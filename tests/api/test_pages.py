"""The web pages of `fleetstream serve` in a real browser (Debian's chromium driven by Playwright) on the real
broker and chDB: each role logs in and sees its pages, refusals show as refusals, charts are drawn from the
store's data, an acknowledgement and a live alert change the page without a reload, reports download.

Screenshots of every page go to `--screenshots DIR`, else to the test run's tmp folder.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.api.conftest import HOUR_MS, PASSWORD, World, _alert, _dyno, _produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("FLEETSTREAM_CHROMIUM", "/usr/bin/chromium")
HOME_PAGE = {"fm": "fleet", "owner": "owner", "tech": "technician", "exec": "executive", "admin": "admin",
             "support": "vehicles"}


def _topic(world: World, stream: str) -> str:
    return f"test.api.{stream}.{world.uid}"


def _gps(org: str, vehicle: str, ts: int, lat: float, lon: float) -> dict[str, Any]:
    return {"batch_id": f"g-{vehicle}-{ts}", "source": "vehicle_client", "org_id": org, "fleet_id": "north",
            "vehicle_id": vehicle, "device_id": "dev",
            "points": [{"timestamp_ms": ts, "latitude": lat, "longitude": lon, "accuracy_m": 4.0, "altitude_m": 20.0,
                        "speed": 30.0, "bearing_deg": 90.0, "available": {"accuracy": True}}]}


@pytest.fixture(scope="module")
def loaded(world: World) -> World:
    """The API world plus GPS fixes (a1, a2 and the other tenant's b1) and a second dyno run with AFR."""
    t0, (a1, a2, _a3) = world.t0_ms, world.vehicles_a
    run2 = f"run2-{world.uid}"
    pull = range(40)
    records = {
        "gps": [(v, "gps_batch", _gps(org, v, t0 + 2 * HOUR_MS, lat, lon)) for org, v, lat, lon in
                ((world.org_a, a1, 52.52, 13.40), (world.org_a, a2, 48.14, 11.58), (world.org_b, world.vehicle_b,
                                                                                     40.0, -3.7))],
        "dyno": [(world.station, "dyno_sample_batch", _dyno(world.station, run2, ch, unit, t0 + 2 * HOUR_MS,
                                                            [f(i) for i in pull]))
                 for ch, unit, f in (("engine_speed", "rpm", lambda i: 2500.0 + 100 * i),
                                     ("power", "hp", lambda i: 80.0 + 6.5 * i - 0.05 * i * i),
                                     ("torque", "ft-lb", lambda i: 320.0 + 4 * i - 0.15 * i * i),
                                     ("afr", "AFR", lambda i: 13.2 - 0.02 * i))],
    }
    _produce(world.settings.kafka.bootstrap_servers, {s: _topic(world, s) for s in records}, records)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        gps = world.sql("SELECT count() AS n FROM fleetstream.gps_points WHERE vehicle_id IN "
                        "({a:String}, {b:String}, {c:String})", {"a": a1, "b": a2, "c": world.vehicle_b})[0]["n"]
        dyno = world.sql("SELECT count() AS n FROM fleetstream.samples WHERE run_id = {r:String}", {"r": run2})[0]["n"]
        if gps >= 3 and dyno >= 160:
            return world
        time.sleep(0.5)
    raise AssertionError("GPS fixes and the second dyno run were not stored in time")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = request.config.getoption("--screenshots")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def _login(page: Page, world: World, user: str) -> None:
    page.goto(f"{world.base_url}/ui/login")
    page.fill("#username", world.username(user))
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url(re.compile(r"/ui/(?!login)"))
    _settled(page)


def _settled(page: Page) -> str:
    page.wait_for_selector("body[data-state]", state="attached")
    return str(page.get_attribute("body", "data-state"))


def _open(page: Page, world: World, path: str) -> str:
    page.goto(f"{world.base_url}{path}")
    return _settled(page)


def _shot(page: Page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _points(page: Page, chart_id: str) -> int:
    return int(page.get_attribute(f"#{chart_id} svg", "data-points") or 0)


def test_a_wrong_password_is_refused_on_the_login_page(page: Page, loaded: World) -> None:
    page.goto(f"{loaded.base_url}/ui/login")
    page.fill("#username", loaded.username("fm"))
    page.fill("#password", "not the password")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("invalid username or password")
    assert page.url.endswith("/ui/login")


@pytest.mark.parametrize("user", list(HOME_PAGE))
def test_each_role_lands_on_its_page_with_only_its_pages_in_the_menu(page: Page, loaded: World, shots: Path,
                                                                     user: str) -> None:
    _login(page, loaded, user)
    assert page.url.split("?")[0].endswith(f"/ui/{HOME_PAGE[user]}")
    assert page.get_attribute("body", "data-state") == "ready", page.inner_text("#refused")
    menu = set(page.locator("#nav a").evaluate_all("links => links.map(a => a.dataset.page)"))
    expected = {"fm": {"fleet", "vehicles", "dyno", "alerts"}, "owner": {"owner", "vehicles", "dyno", "alerts"},
                "tech": {"technician", "vehicles", "dyno", "alerts"}, "exec": {"executive"},
                "admin": {"fleet", "executive", "admin", "vehicles", "dyno", "alerts"},
                "support": {"vehicles", "alerts"}}[user]
    assert menu == expected
    _shot(page, shots, f"home-{user}")


def test_fleet_page_draws_the_stores_numbers(page: Page, loaded: World, shots: Path) -> None:
    _login(page, loaded, "fm")
    expect(page.locator("#tile-vehicles .value")).to_have_text("4")
    bars = page.locator("#chart-health rect.bar").evaluate_all(
        "bars => Object.fromEntries(bars.map(b => [b.dataset.label, Number(b.dataset.value)]))")
    assert bars == {"excellent": 0, "good": 1, "fair": 1, "poor": 0, "critical": 1}
    assert _points(page, "chart-severity") == 2  # critical and warning episodes of org a
    assert _points(page, "chart-positions") == 2  # a1 and a2: the other tenant's b1 is not drawn
    assert page.locator("#chart-positions circle.point").count() == 2
    assert "P0301" in page.inner_text("#top-dtcs")
    assert loaded.vehicle_b not in page.content()
    _shot(page, shots, "fleet")


def test_owner_sees_own_vehicle_only_and_is_refused_the_fleet_page(page: Page, loaded: World, shots: Path) -> None:
    a1, a2, _ = loaded.vehicles_a
    _login(page, loaded, "owner")
    body = page.inner_text("#content")
    assert a1 in body and a2 not in body
    assert _points(page, "chart-owner-health") == 1
    assert _open(page, loaded, "/ui/fleet") == "refused"
    expect(page.locator("#refused")).to_contain_text("role owner lacks permission")
    assert page.locator("#chart-health").count() == 0
    _shot(page, shots, "refused-owner-fleet")
    assert _open(page, loaded, f"/ui/vehicle?id={a2}") == "refused"  # another owner's vehicle
    assert page.get_attribute("#refused", "data-status") == "404"


@pytest.mark.parametrize(("user", "path", "status"), [("exec", "/ui/alerts", "403"), ("tech", "/ui/admin", "403"),
                                                      ("fm", "/ui/admin", "403"), ("support", "/ui/dyno", "403")])
def test_pages_a_role_may_not_open_show_the_refusal(page: Page, loaded: World, user: str, path: str,
                                                   status: str) -> None:
    _login(page, loaded, user)
    assert _open(page, loaded, path) == "refused"
    assert page.get_attribute("#refused", "data-status") == status
    assert page.locator("#content table").count() == 0


def test_another_tenants_vehicle_page_is_refused(page: Page, loaded: World, shots: Path) -> None:
    _login(page, loaded, "fm_b")
    assert _open(page, loaded, f"/ui/vehicle?id={loaded.vehicles_a[0]}") == "refused"
    assert page.get_attribute("#refused", "data-status") == "404"
    assert page.locator("#channels-table").count() == 0
    _shot(page, shots, "refused-other-tenant-vehicle")
    assert _open(page, loaded, f"/ui/channel?vehicle={loaded.vehicles_a[0]}&channel=EngineSpeed") == "refused"


def test_admin_sees_the_orgs_users_and_the_audit_log(page: Page, loaded: World, shots: Path) -> None:
    _login(page, loaded, "admin")
    users = page.inner_text("#users-table")
    assert loaded.username("fm") in users and loaded.username("fm_b") not in users
    expect(page.locator("#audit-table tbody tr").first).to_be_visible(timeout=30_000)
    assert "/api/v1/" in page.inner_text("#audit-table")
    _shot(page, shots, "admin")


def test_drill_down_fleet_to_vehicle_to_channel_draws_the_window_series(page: Page, loaded: World,
                                                                         shots: Path) -> None:
    a1 = loaded.vehicles_a[0]
    _login(page, loaded, "fm")
    page.click("#nav a[data-page=vehicles]")
    _settled(page)
    page.click(f"#vehicles-table a:text-is('{a1}')")
    assert _settled(page) == "ready"
    # the live latest value arrives over the event stream: a1's newest EngineSpeed sample is 1040 rpm
    expect(page.locator("#channels-table .latest[data-channel=EngineSpeed]")).to_have_text("1,040 rpm", timeout=20_000)
    _shot(page, shots, "vehicle")
    page.click("#channels-table a:text-is('EngineSpeed')")
    assert _settled(page) == "ready"
    series = page.locator("#chart-windows path.series").evaluate_all(
        "paths => Object.fromEntries(paths.map(p => [p.dataset.series, Number(p.dataset.n)]))")
    assert series == {"max": 3, "p95": 3, "mean": 3, "min": 3}  # a1's three tumbling windows
    _shot(page, shots, "channel")


def test_dyno_runs_page_compares_power_torque_and_afr_against_rpm(page: Page, loaded: World, shots: Path) -> None:
    run2 = f"run2-{loaded.uid}"
    _login(page, loaded, "fm")
    _open(page, loaded, "/ui/dyno")
    page.check(f"input.run[value='{loaded.run_id}']")
    page.check(f"input.run[value='{run2}']")
    page.click("#compare")
    page.wait_for_url(re.compile(r"runs="))
    assert _settled(page) == "ready"
    series = page.locator("#chart-power path.series").evaluate_all(
        "paths => Object.fromEntries(paths.map(p => [p.dataset.series, Number(p.dataset.n)]))")
    assert series[f"{loaded.run_id[:12]} power (hp)"] == 4 and series[f"{run2[:12]} torque (ft-lb)"] == 40
    assert _points(page, "chart-afr") == 40  # only run 2 recorded AFR
    side = page.inner_text("#runs-side-by-side")
    assert loaded.run_id in side and run2 in side and "310.5" in side
    _shot(page, shots, "dyno-compare")


def test_acknowledging_an_alert_changes_the_page_and_the_kpi(page: Page, loaded: World, shots: Path) -> None:
    a3_alert = loaded.alerts["a3"]
    _login(page, loaded, "fm")
    _open(page, loaded, "/ui/alerts")
    before = int(page.inner_text("#tile-acked .value"))
    row = page.locator(f"tr[data-alert='{a3_alert}']")
    row.locator("button.ack").click()
    expect(row.locator(".state")).to_contain_text("acknowledged", timeout=15_000)
    expect(row.locator("button.ack")).to_have_count(0)
    # through Kafka and the sink into alert_acks, then alert-stats: the time-to-acknowledge KPI counts it
    expect(page.locator("#tile-acked .value")).to_have_text(str(before + 1), timeout=60_000)
    _shot(page, shots, "alerts-acknowledged")


def test_a_new_alert_appears_live_without_reload(page: Page, loaded: World, shots: Path) -> None:
    _login(page, loaded, "fm")
    _open(page, loaded, "/ui/alerts")
    expect(page.locator("#live-alerts.on")).to_have_count(1, timeout=15_000)
    page.evaluate("() => { window.__notReloaded = true; }")
    alert_id = f"al-live-{loaded.uid}"
    vehicle = loaded.vehicles_a[1]
    _produce(loaded.settings.kafka.bootstrap_servers, {"alerts": _topic(loaded, "alerts")},
             {"alerts": [(vehicle, "alert", _alert(alert_id, vehicle, "critical", int(time.time() * 1000)))]})
    expect(page.locator(f"tr[data-alert='{alert_id}']")).to_be_visible(timeout=60_000)
    assert page.evaluate("() => window.__notReloaded") is True
    _shot(page, shots, "alerts-live")


def test_report_downloads_from_the_page(page: Page, loaded: World, tmp_path: Path) -> None:
    _login(page, loaded, "fm")
    page.select_option("#report-form select[name=kind]", "alerts")
    page.select_option("#report-form select[name=format]", "csv")
    with page.expect_download(timeout=60_000) as download:
        page.click("#report-generate")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    text = target.read_text()
    assert target.suffix == ".csv" and loaded.alerts["a3"] in text and loaded.alerts["b1"] not in text
