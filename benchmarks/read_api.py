"""`fleetstream bench api`: latency of the read API under 100 concurrent users on a realistic store.

Setup, in a temporary home on a private broker: a chDB store is loaded directly (not through the pipeline:
the figure is the API's, and loading 30 days through Kafka would take hours) with one org of `vehicles`
vehicles over `days` days: KPIs (health_score and uptime_pct every `kpi_minutes`, as the worker emits them),
tumbling window aggregates of one channel every `window_minutes`, an hourly sample per vehicle (the
vehicle directory and the hourly rollup), alert episodes and DTCs. Then `fleetstream serve` runs as its own
process on the store (embedded, opened in that process) and `users` clients (sharing 10 fleet-manager
accounts of the org) call it concurrently over HTTP from this process on kept-alive connections.

Each probe is one named function in PROBES that gets the running server and returns its figures; a new
probe (a browser's `dashboard_load_ms`, say) is one more entry. The built-in probes:

- `dashboard`: `GET /api/v1/dashboards/fleet` over the last 7 days as users get it: the 5-minute cache starts
  cold, all users ask at once, the first request computes and the others wait for it (one computation per
  key), then the cache answers. `dashboard_p95_ms` is this figure.
- `aggregate`: `POST /api/v1/metrics/aggregate` of the KPI health_score, avg per hour over 7 days, likewise.
- `dashboard_compute`, `aggregate_compute`: one user alone with `refresh=true`: what one computation costs
  (a cache miss), without queueing.
- `dashboard_uncached` (only with `--probe`): every user with `refresh=true` at once; in the embedded store
  one process runs one query at a time, so this is the queue of `users` computations.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fleetstream.admin import create_topics
from fleetstream.benchmarks.common import machine_info, machine_line, private_kafka, render_table
from fleetstream.config import KafkaSettings, Settings, TopicSettings

__all__ = ["PROBES", "ApiTarget", "bench_api", "to_table"]

ORG = "bench-org"
PASSWORD = "bench-password-" + "x" * 8
ACCOUNTS = 10
"""Fleet-manager accounts the simulated users log in as (users share them: logins are argon2-slow by design)."""
MIN_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class ApiTarget:
    """A running server and what a probe needs to call it."""

    base_url: str
    tokens: list[str]
    """One token per simulated user."""
    requests_per_user: int
    now: dt.datetime


# --- loading the store ---------------------------------------------------------------------------------------


def _insert(client: Any, table: str, columns: dict[str, Any]) -> int:
    import pyarrow as pa

    data = pa.table(columns)
    client.insert_arrow(f"fleetstream.{table}", data)
    return int(data.num_rows)


def _ts(ms: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.array(ms.astype("int64"), pa.int64()).cast(pa.timestamp("ms", "UTC"))


def load_store(dsn: str, vehicles: int, days: int, kpi_minutes: int, window_minutes: int,
               now_ms: int, seed: int = 1, progress: Callable[[str], None] = print) -> dict[str, int]:
    """Migrate a fresh store and fill it; returns rows per table."""
    from fleetstream.sinks.clickhouse.migrations import migrate
    from fleetstream.store.client import connect

    rng = np.random.default_rng(seed)
    ids = np.array([f"veh-{i:05d}" for i in range(vehicles)])
    start_ms = (now_ms // DAY_MS - days + 1) * DAY_MS
    client = connect(dsn)
    counts: dict[str, int] = {}
    try:
        migrate(client)
        for day in range(days):
            day_ms = start_ms + day * DAY_MS
            for table, columns in _day(rng, ids, day_ms, min(DAY_MS, now_ms - day_ms), kpi_minutes, window_minutes):
                counts[table] = counts.get(table, 0) + _insert(client, table, columns)
            progress(f"loaded day {day + 1}/{days}: {sum(counts.values()):,} rows")
    finally:
        client.close()
    return counts


def _day(rng: np.random.Generator, ids: np.ndarray, day_ms: int, span_ms: int, kpi_minutes: int,
         window_minutes: int) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa

    n = len(ids)
    hours = np.arange(0, span_ms, 3_600_000) + day_ms
    vehicle, hour = np.repeat(ids, len(hours)), np.tile(hours, n)
    yield "samples", {"org_id": pa.array([ORG] * len(vehicle)).dictionary_encode(),
                      "fleet_id": pa.array(np.where(np.char.endswith(vehicle, "0"), "south", "north")),
                      "vehicle_id": pa.array(vehicle), "channel": pa.array(["EngineSpeed"] * len(vehicle)),
                      "unit": pa.array(["rpm"] * len(vehicle)), "ts": _ts(hour + 1000),
                      "value": pa.array(rng.normal(2400, 400, len(vehicle)))}
    periods = np.arange(kpi_minutes * MIN_MS, span_ms + 1, kpi_minutes * MIN_MS) + day_ms
    vehicle, end = np.repeat(ids, len(periods)), np.tile(periods, n)
    for name, unit, values in (("health_score", "score", np.clip(rng.normal(80, 15, len(end)), 0, 100)),
                               ("uptime_pct", "%", np.clip(rng.normal(92, 8, len(end)), 0, 100))):
        yield "kpis", {"scope": pa.array(["vehicle"] * len(end)), "scope_id": pa.array(vehicle),
                       "name": pa.array([name] * len(end)), "value": pa.array(values),
                       "unit": pa.array([unit] * len(end)), "period_start": _ts(end - kpi_minutes * MIN_MS),
                       "period_end": _ts(end), "computed_at": _ts(end)}
    starts = np.arange(0, span_ms - window_minutes * MIN_MS + 1, window_minutes * MIN_MS) + day_ms
    vehicle, start = np.repeat(ids, len(starts)), np.tile(starts, n)
    mean = rng.normal(2400, 300, len(start))
    yield "window_aggregates", {
        "key": pa.array(vehicle), "source_topic": pa.array(["telemetry.signals.valid"] * len(start)),
        "channel": pa.array(["EngineSpeed"] * len(start)), "unit": pa.array(["rpm"] * len(start)),
        "window_kind": pa.array(["tumbling"] * len(start)), "window_start": _ts(start),
        "window_end": _ts(start + window_minutes * MIN_MS), "count": pa.array(np.full(len(start), 60), pa.uint32()),
        "min": pa.array(mean - 300), "max": pa.array(mean + 300), "mean": pa.array(mean), "last": pa.array(mean),
        "p95": pa.array(mean + 250)}
    yield from _alerts_and_dtcs(rng, ids, day_ms, span_ms)


def _alerts_and_dtcs(rng: np.random.Generator, ids: np.ndarray, day_ms: int,
                     span_ms: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """About 5 % of the vehicles fire an alert a day; most episodes resolve within the hour."""
    import pyarrow as pa

    alerting = rng.choice(ids, size=max(1, len(ids) // 20), replace=False)
    started = day_ms + rng.integers(0, max(1, span_ms - 3_600_000), len(alerting))
    resolved = rng.random(len(alerting)) < 0.9
    ended = started + rng.integers(60_000, 3_600_000, len(alerting))
    alert_ids = np.array([f"al-{day_ms}-{v}" for v in alerting])
    event = np.concatenate([np.full(len(alerting), "fired"), np.full(int(resolved.sum()), "resolved")])
    both = np.concatenate([np.arange(len(alerting)), np.flatnonzero(resolved)])
    severity = np.where(rng.random(len(alerting)) < 0.3, "critical", "warning")
    m = len(both)
    yield "alerts", {"alert_id": pa.array(alert_ids[both]), "event": pa.array(event),
                     "kind": pa.array(["threshold"] * m), "rule_id": pa.array(["over_rev"] * m),
                     "key": pa.array(alerting[both]), "channel": pa.array(["EngineSpeed"] * m),
                     "severity": pa.array(severity[both]), "comparator": pa.array([">"] * m),
                     "threshold": pa.array(np.full(m, 6200.0)), "value": pa.array(np.full(m, 6500.0)),
                     "started": _ts(started[both]),
                     "ended": pa.array([None if e == "fired" else int(x) for e, x in zip(event, ended[both],
                                                                                        strict=True)],
                                       pa.int64()).cast(pa.timestamp("ms", "UTC")),
                     "message": pa.array(["over rev"] * m)}
    codes = rng.choice(np.array(["P0301", "P0420", "P0171", "P0128"]), len(alerting))
    yield "dtcs", {"org_id": pa.array([ORG] * len(alerting)), "fleet_id": pa.array(["north"] * len(alerting)),
                   "vehicle_id": pa.array(alerting), "ts": _ts(started), "dtc_id": pa.array(codes),
                   "status": pa.array(["2F"] * len(alerting)), "description": pa.array(codes)}


# --- the server ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(home: Path, dsn: str, bootstrap: str, secret: str, log: Path) -> Iterator[str]:
    """`fleetstream serve` as its own process on the store; yields its base URL once /health answers."""
    port = _free_port()
    env = {**os.environ, "FLEETSTREAM_HOME": str(home), "CLICKHOUSE_DSN": dsn, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "JWT_SECRET_KEY": secret, "FLEETSTREAM_LOG_LEVEL": "WARNING"}
    env.pop("FLEETSTREAM_CONFIG", None)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "fleetstream", "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"fleetstream serve exited ({process.returncode}): {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("fleetstream serve did not answer /health within 120 s")
                time.sleep(0.3)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _add_users(bootstrap: str, users: int) -> list[str]:
    from fleetstream.api.rbac import Role
    from fleetstream.api.users import UserStore
    from fleetstream.config import KafkaSettings

    store = UserStore(KafkaSettings(bootstrap_servers=bootstrap), "fleetstream.users")
    store.ensure_topic()
    store.load()
    names = [f"bench-fm-{i}" for i in range(users)]
    try:
        for name in names:
            store.add(name, PASSWORD, ORG, Role.FLEET_MANAGER, ())
    finally:
        store.close()
    return names


def _login(base: str, names: list[str]) -> list[str]:
    tokens = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for name in names:
            response = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
            response.raise_for_status()
            tokens.append(response.json()["access_token"])
    return tokens


# --- probes --------------------------------------------------------------------------------------------------


def _open_store(base: str, token: str) -> None:
    """Have the server open the store (seconds, once) with an uncached call, leaving the response cache cold."""
    httpx.get(f"{base}/api/v1/vehicles", headers=_bearer(token), timeout=600).raise_for_status()


async def _concurrent(target: ApiTarget, call: Callable[[httpx.AsyncClient, str], Any]) -> list[float]:
    """Every user sends `requests_per_user` requests one after the other, all users at once; latencies in ms."""
    latencies: list[float] = []
    failures: list[str] = []
    # kept-alive connections, as real clients use them (serve keeps idle ones longer than httpx's pool does)
    limits = httpx.Limits(max_connections=len(target.tokens), max_keepalive_connections=len(target.tokens))
    async with httpx.AsyncClient(base_url=target.base_url, timeout=600, limits=limits) as client:
        async def user(token: str) -> None:
            for _ in range(target.requests_per_user):
                started = time.perf_counter()
                response = await call(client, token)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")

        await asyncio.gather(*(user(t) for t in target.tokens))
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return latencies


def _figures(name: str, latencies: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {f"{name}_p50_ms": float(p50), f"{name}_p95_ms": float(p95), f"{name}_p99_ms": float(p99),
            f"{name}_requests": float(len(latencies))}


def _week(target: ApiTarget) -> dict[str, str]:
    return {"from": (target.now - dt.timedelta(days=7)).isoformat(), "to": target.now.isoformat()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _dashboard(target: ApiTarget, name: str, refresh: bool) -> dict[str, float]:
    params = {**_week(target), "refresh": str(refresh).lower()}
    return _figures(name, asyncio.run(_concurrent(target, lambda c, t: c.get(
        "/api/v1/dashboards/fleet", params=params, headers=_bearer(t)))))


def _aggregate(target: ApiTarget, name: str, refresh: bool) -> dict[str, float]:
    week = _week(target)
    body = {"metric_id": "health_score", "source": "kpi", "aggregation_method": "avg", "granularity": "hour",
            "start_time": week["from"], "end_time": week["to"]}
    return _figures(name, asyncio.run(_concurrent(target, lambda c, t: c.post(
        "/api/v1/metrics/aggregate", params={"refresh": str(refresh).lower()}, json=body, headers=_bearer(t)))))


def _alone(target: ApiTarget) -> ApiTarget:
    """One user: the cost of one computation without queueing behind the others."""
    return ApiTarget(target.base_url, target.tokens[:1], target.requests_per_user, target.now)


PROBES: dict[str, Callable[[ApiTarget], dict[str, float]]] = {
    "dashboard": lambda t: _dashboard(t, "dashboard", refresh=False),
    "aggregate": lambda t: _aggregate(t, "aggregate", refresh=False),
    "dashboard_compute": lambda t: _dashboard(_alone(t), "dashboard_compute", refresh=True),
    "aggregate_compute": lambda t: _aggregate(_alone(t), "aggregate_compute", refresh=True),
    "dashboard_uncached": lambda t: _dashboard(t, "dashboard_uncached", refresh=True),
}
"""Probe name → function of the running server returning its figures (`<name>_p95_ms`, ...)."""
DEFAULT_PROBES = ("dashboard", "aggregate", "dashboard_compute", "aggregate_compute")
"""`dashboard_uncached` (every user recomputes at once, queueing on the store) runs only when asked for."""


def bench_api(settings: Settings, vehicles: int = 1000, days: int = 30, users: int = 100,
              requests_per_user: int = 5, kpi_minutes: int = 5, window_minutes: int = 5,
              probes: list[str] | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Load, serve, measure every probe in turn; the report with the figures at the top level."""
    chosen = probes or list(DEFAULT_PROBES)
    unknown = sorted(set(chosen) - PROBES.keys())
    if unknown:
        raise ValueError(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBES)}")
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-api-") as tmp, \
            private_kafka(Path(tmp) / "kafka") as bootstrap:
        home = Path(tmp) / "home"
        dsn = f"chdb://{home / 'clickhouse'}"
        started = time.perf_counter()
        rows = load_store(dsn, vehicles, days, kpi_minutes, window_minutes, int(now.timestamp() * 1000),
                          progress=progress)
        load_s = time.perf_counter() - started
        accounts = _add_users(bootstrap, min(users, ACCOUNTS))
        create_topics(KafkaSettings(bootstrap_servers=bootstrap), TopicSettings())  # audit.log and the others
        log = Path(tempfile.gettempdir()) / f"fleetstream-bench-api-serve-{os.getpid()}.log"  # kept for a post-mortem
        progress(f"serve's log: {log}")
        with running_server(home, dsn, bootstrap, secrets.token_urlsafe(48), log) as base:
            tokens = _login(base, accounts)
            target = ApiTarget(base, [tokens[i % len(tokens)] for i in range(users)], requests_per_user, now)
            figures: dict[str, float] = {}
            _open_store(base, target.tokens[0])
            for name in chosen:
                progress(f"probe {name}")
                figures.update(PROBES[name](target))
    return {**figures, "workload": {"vehicles": vehicles, "days": days, "users": users,
                                    "requests_per_user": requests_per_user, "kpi_minutes": kpi_minutes,
                                    "window_minutes": window_minutes, "rows": rows, "load_s": round(load_s, 1),
                                    "store": "embedded chDB, opened by the serve process"},
            "probes": chosen, "machine": machine_info()}


def to_table(report: dict[str, Any]) -> str:
    w = report["workload"]
    rows = [[name, report[f"{name}_p50_ms"], report[f"{name}_p95_ms"], report[f"{name}_p99_ms"],
             int(report[f"{name}_requests"])] for name in report["probes"] if f"{name}_p95_ms" in report]
    notes = [f"{w['vehicles']:,} vehicles, {w['days']} days ({sum(w['rows'].values()):,} rows, loaded in "
             f"{w['load_s']} s), {w['users']} concurrent users x {w['requests_per_user']} requests; "
             f"store: {w['store']}",
             "dashboard, aggregate: cache cold at start, one computation per key; *_compute: one user, refresh=true",
             machine_line(report["machine"])]
    return render_table("fleetstream bench api: latency under concurrent users (ms)",
                        ["probe", "p50", "p95", "p99", "requests"], rows, notes)
