"""`fleetstream bench dashboard`: how long the fleet dashboard takes in a real browser with a 1,000-vehicle fleet.

`dashboard_load_ms` is navigation start to the page's `charts-drawn` mark (every API call answered and every
chart drawn), measured by Chromium's own performance clock, with the API's 5-minute cache emptied before each
load so the store answers every query (`dashboard_load_warm_ms`: the same page answered from the cache).

The fleet is generated in ClickHouse itself (INSERT ... SELECT over `numbers()`, seconds instead of the minutes
that encoding a million records through Kafka would take): per vehicle hourly health and uptime KPIs, hourly
samples of three channels, GPS fixes, alert episodes and DTCs over `days`; the read side reads the same tables
as it does behind a sink. Two dyno runs come from the sample files (`producers/samples/dyno_pull.wp8` and
`.pvlog`) through the file importer, for the dyno page screenshot. Everything runs on a private broker and a
temporary home, removed afterwards.
"""

from __future__ import annotations

import logging
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from fleetstream import producers
from fleetstream.admin import ensure_topics
from fleetstream.api.app import create_app
from fleetstream.api.cache import TtlCache
from fleetstream.api.rbac import Role
from fleetstream.api.services import Services
from fleetstream.benchmarks.common import machine_info, machine_line, private_pipeline_settings, render_table
from fleetstream.config import Settings
from fleetstream.producers.files import FileImport
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.inserts import insert_batch
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.store.client import connect

__all__ = ["bench_dashboard", "to_table"]

log = logging.getLogger(__name__)

ORG = "bench"
CHROMIUM = "/usr/bin/chromium"
SAMPLES_DIR = Path(producers.__file__).resolve().parent / "samples"
_HOUR = "toDateTime64(toStartOfHour(now()), 3, 'UTC') - toIntervalHour(h)"
_VEHICLE = "concat('veh-', leftPad(toString(v), 4, '0'))"
_EACH_HOUR = "(SELECT number % {n} AS v, intDiv(number, {n}) AS h FROM numbers({n} * {hours}))"

# Each statement is formatted with integers only (n vehicles, hours); nothing from outside reaches the SQL.
_FLEET = [
    f"""INSERT INTO fleetstream.samples (org_id, fleet_id, vehicle_id, device_id, source, channel, unit, ts, value)
    SELECT '{ORG}', concat('fleet-', toString(v % 10)), {_VEHICLE}, 'bench', 'bench', ch.1, ch.2, {_HOUR},
           ch.3 + (cityHash64(v, h, ch.1) % 1000) / 10
    FROM {_EACH_HOUR} ARRAY JOIN [('EngineSpeed', 'rpm', 800.0), ('CoolantTemp', 'degC', 60.0),
                                  ('VehicleSpeed', 'km/h', 0.0)] AS ch""",
    f"""INSERT INTO fleetstream.kpis (scope, scope_id, name, value, unit, period_start, period_end, dimensions,
                                      computed_at)
    SELECT 'vehicle', {_VEHICLE}, k.1, least(100, greatest(0, k.2 + (cityHash64(v, h, k.1) % 200) / 10 - 10)), k.3,
           {_HOUR} - toIntervalHour(1), {_HOUR}, map('fleet_id', concat('fleet-', toString(v % 10))), {_HOUR}
    FROM {_EACH_HOUR} ARRAY JOIN [('health_score', 30.0 + (v * 37) % 70, 'score'), ('uptime_pct', 90.0, '%')] AS k""",
    f"""INSERT INTO fleetstream.gps_points (org_id, fleet_id, vehicle_id, device_id, source, ts, latitude, longitude)
    SELECT '{ORG}', concat('fleet-', toString(v % 10)), {_VEHICLE}, 'bench', 'bench', {_HOUR},
           47.0 + (cityHash64(v) % 600) / 100 + h / 1000, 6.0 + (cityHash64(v, 1) % 900) / 100 - h / 1000
    FROM {_EACH_HOUR} WHERE h < 24""",
    f"""INSERT INTO fleetstream.dtcs (org_id, fleet_id, vehicle_id, device_id, source, ts, dtc_id, status,
                                      description)
    SELECT '{ORG}', concat('fleet-', toString(v % 10)), {_VEHICLE}, 'bench', 'bench', {_HOUR}, c.1, '2F', c.2
    FROM {_EACH_HOUR} ARRAY JOIN [('P0301', 'Cylinder 1 Misfire Detected'),
                                  ('P0420', 'Catalyst System Efficiency Below Threshold'),
                                  ('P0171', 'System Too Lean (Bank 1)')] AS c
    WHERE cityHash64(v, h, c.1) % 400 = 0""",
    f"""INSERT INTO fleetstream.alerts (alert_id, event, kind, rule_id, key, channel, severity, comparator,
                                        threshold, value, started, ended, message)
    SELECT concat('al-', toString(v), '-', toString(h)), e, 'threshold', 'over_temp', {_VEHICLE}, 'CoolantTemp',
           ['critical', 'warning', 'info'][1 + cityHash64(v, h, 1) % 3], '>', 110, 118, {_HOUR},
           if(e = 'resolved', {_HOUR} + toIntervalMinute(20), NULL), 'coolant above 110 degC'
    FROM {_EACH_HOUR} ARRAY JOIN ['fired', 'resolved'] AS e
    WHERE cityHash64(v, h) % 150 = 0 AND (e = 'fired' OR cityHash64(v, h, 2) % 10 < 7)""",
]


def load_fleet(settings: Settings, vehicles: int, days: int) -> dict[str, int]:
    """Create the store and generate the fleet and two dyno runs in it; returns the row count of each table."""
    client = connect(settings.clickhouse_dsn)
    try:
        migrate(client)
        for statement in _FLEET:
            client.command(statement.format(n=int(vehicles), hours=int(days) * 24))
        _load_dyno_runs(client)
        return {t: int(client.query(f"SELECT count() FROM fleetstream.{t}").result_rows[0][0])
                for t in ("samples", "kpis", "gps_points", "dtcs", "alerts")}
    finally:
        client.close()


def _load_dyno_runs(client: Any) -> None:
    now_ms = int(time.time() * 1000)
    for n, name in enumerate(("dyno_pull.wp8", "dyno_pull.pvlog")):
        mapping = SAMPLES_DIR / f"{name}.mapping.yaml"
        records = list(FileImport(SAMPLES_DIR / name, station_id="cell-1", progress=False,
                                  mapping=mapping if mapping.exists() else None,
                                  start_time_ms=now_ms - (2 - n) * 3_600_000))
        sourced = [rows.SourcedRecord(r, "bench.dyno", 0, i) for i, r in enumerate(records)]
        insert_batch(client, "samples", rows.to_columns("dyno_sample_batch", sourced), f"bench-dyno-{name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(services: Services) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=_free_port(),
                                           log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="bench-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _load_ms(page: Any, url: str, calls: dict[str, list[float]] | None = None) -> float:
    """Navigation start → the page's charts-drawn mark, by the browser's clock; fails on a refused page.
    `calls` collects each API call's duration (request start → response end) by path."""
    page.goto(url)
    page.wait_for_selector("body[data-state]", state="attached", timeout=120_000)
    state = page.get_attribute("body", "data-state")
    if state != "ready":
        raise RuntimeError(f"{url} did not load: {page.inner_text('#refused')}")
    if calls is not None:
        for name, duration in page.evaluate("""() => performance.getEntriesByType('resource')
                .filter(e => e.name.includes('/api/v1/') && !e.name.includes('/live/'))
                .map(e => [new URL(e.name).pathname, e.duration])"""):
            calls.setdefault(name, []).append(float(duration))
    return float(page.evaluate("() => performance.getEntriesByName('charts-drawn')[0].startTime"))


def _measure(services: Services, base_url: str, password: str, repeats: int,
             screenshots: Path | None, chromium: str) -> dict[str, Any]:
    """Cold (cache emptied) and warm loads of the fleet page, alternating, and the cold loads' API call times."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(f"{base_url}/ui/login")
            page.fill("#username", "bench-fleet-manager")
            page.fill("#password", password)
            page.click("#login-button")
            page.wait_for_selector("body[data-state]", state="attached", timeout=120_000)
            cold: list[float] = []
            warm: list[float] = []
            calls: dict[str, list[float]] = {}
            for _ in range(repeats):
                services.cache = TtlCache(services.settings.api.cache_ttl_s)  # every query goes to the store
                cold.append(_load_ms(page, f"{base_url}/ui/fleet", calls))
                warm.append(_load_ms(page, f"{base_url}/ui/fleet"))
            if screenshots is not None:
                _screenshots(page, base_url, screenshots)
            return {"cold": cold, "warm": warm,
                    "calls": {k: round(statistics.median(v), 1) for k, v in sorted(calls.items())}}
        finally:
            browser.close()


def _screenshots(page: Any, base_url: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _load_ms(page, f"{base_url}/ui/fleet")
    page.screenshot(path=str(folder / "fleet-dashboard.png"), full_page=True)
    _load_ms(page, f"{base_url}/ui/dyno")
    runs = page.locator("input.run").evaluate_all("boxes => boxes.map(b => b.value)")
    _load_ms(page, f"{base_url}/ui/dyno?runs={','.join(runs)}")
    page.screenshot(path=str(folder / "dyno-run.png"), full_page=True)


def bench_dashboard(base: Settings, vehicles: int = 1000, days: int = 30, repeats: int = 5,
                    screenshots: Path | None = None, chromium: str = CHROMIUM) -> dict[str, Any]:
    with private_pipeline_settings(base, "dashboard") as settings:
        settings = settings.model_copy(update={"api": settings.api.model_copy(update={
            "jwt_secret": SecretStr(secrets.token_urlsafe(48)), "default_org": ORG})})
        started = time.perf_counter()
        loaded = load_fleet(settings, vehicles, days)
        # the audit and acknowledgement topics exist on a real stack; without them audit entries would queue
        ensure_topics(settings.kafka.bootstrap_servers, [settings.api.audit_topic, settings.api.acks_topic],
                      partitions=1)
        # created here, where creation waits for the partition leader: UserStore.ensure_topic does not, and on a
        # busy machine its first read then fails with "Unknown topic or partition"
        ensure_topics(settings.kafka.bootstrap_servers, [settings.api.users_topic], partitions=1,
                      config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
        load_s = time.perf_counter() - started
        password = secrets.token_urlsafe(16)
        services = Services.start(settings)
        try:
            services.users.add("bench-fleet-manager", password, ORG, Role.FLEET_MANAGER, ())
            with _serving(services) as base_url:
                times = _measure(services, base_url, password, repeats, screenshots, chromium)
        finally:
            services.close()
    return {"dashboard_load_ms": statistics.median(times["cold"]),
            "dashboard_load_warm_ms": statistics.median(times["warm"]),
            "loads_ms": {k: [round(v, 1) for v in times[k]] for k in ("cold", "warm")},
            "api_calls_cold_median_ms": times["calls"],
            "workload": {"vehicles": vehicles, "days": days, "repeats": repeats, "rows": loaded,
                         "load_s": round(load_s, 1), "store": "embedded chDB, read in the serving process"},
            "machine": machine_info()}


def to_table(report: dict[str, Any]) -> str:
    loads = report["loads_ms"]
    rows_ = [["fleet dashboard, cache emptied (dashboard_load_ms)", f"{report['dashboard_load_ms']:,.0f}",
              f"{min(loads['cold']):,.0f}", f"{max(loads['cold']):,.0f}"],
             ["fleet dashboard, from the 5-minute cache", f"{report['dashboard_load_warm_ms']:,.0f}",
              f"{min(loads['warm']):,.0f}", f"{max(loads['warm']):,.0f}"]]
    w = report["workload"]
    calls = report["api_calls_cold_median_ms"]
    rows_ += [[f"  API call {path} (cold)", f"{ms:,.0f}", "", ""] for path, ms in calls.items()]
    notes = [f"{w['vehicles']:,} vehicles, {w['days']} days: " + ", ".join(f"{t} {n:,}" for t, n in w["rows"].items()),
             "navigation start -> all API calls answered and charts drawn, Chromium's clock; "
             f"median of {w['repeats']} loads", machine_line(report["machine"])]
    return render_table("bench dashboard: fleet dashboard load in Chromium", ["page", "median ms", "min", "max"],
                        rows_, notes)
