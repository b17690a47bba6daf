"""A running read side on real services: records of two tenants through Kafka and the ClickHouse sink, users
on a compacted topic, and `fleetstream serve`'s app on 127.0.0.1 reading through the sink's query endpoint.

Topic names, org ids, vehicle ids and users are unique per module, so the fixture shares the session broker
with other tests without seeing their data.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import Producer

from fleetstream.admin import ensure_topics
from fleetstream.api.app import create_app
from fleetstream.api.rbac import Role
from fleetstream.api.server import server_config
from fleetstream.api.services import Services
from fleetstream.config import Settings, load_settings
from fleetstream.schemas.codec import encode
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.consumer import ClickHouseSink
from fleetstream.store.client import embedded_path
from fleetstream.store.query_server import discover, query

HOUR_MS = 3_600_000
MIN_MS = 60_000
PASSWORD = "correct horse battery"
SECRET = "test-secret-" + "x" * 40


@dataclass
class World:
    """What the fixture loaded, for the tests to compare against."""

    uid: str
    t0_ms: int
    settings: Settings
    base_url: str
    org_a: str
    org_b: str
    vehicles_a: list[str]
    vehicle_b: str
    station: str
    run_id: str
    alerts: dict[str, str]
    users: dict[str, Any] = field(default_factory=dict)
    app: Any = None
    services: Any = None
    sink: Any = None

    @property
    def range_params(self) -> dict[str, str]:
        return {"from": iso(self.t0_ms - HOUR_MS), "to": iso(self.t0_ms + 4 * HOUR_MS)}

    def sql(self, statement: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Direct SQL on the store (through the sink's endpoint), for expected values."""
        result = query(self.settings, statement, parameters)
        return [dict(zip(result.columns, r, strict=True)) for r in result.rows]

    def client(self, user: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def token(self, user: str) -> str:
        if user not in self.users.setdefault("_tokens", {}):
            with httpx.Client(base_url=self.base_url, timeout=60) as c:
                response = c.post("/api/v1/auth/login", json={"username": self.username(user), "password": PASSWORD})
                assert response.status_code == 200, response.text
                self.users["_tokens"][user] = response.json()["access_token"]
        token: str = self.users["_tokens"][user]
        return token

    def username(self, user: str) -> str:
        return f"{user}-{self.uid}"

    def user_id(self, user: str) -> str:
        return str(self.users[user].user_id)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _signal(org: str, vehicle: str, start_ms: int, n: int, name: str = "EngineSpeed") -> dict[str, Any]:
    return {"batch_id": f"b-{vehicle}-{name}-{start_ms}", "source": "simulator", "org_id": org, "fleet_id": "north",
            "vehicle_id": vehicle, "device_id": "dev", "name": name, "unit": "rpm", "message_name": "",
            "network_name": "", "ecu_name": "", "ecu_id": "", "arb_id": "", "file_id": "", "message_date": "",
            "param_type": "NUMBER", "signal_type": "SIGNAL", "param_id": "",
            "samples": [{"timestamp_ms": start_ms + i * 1000, "value": 1000.0 + 10 * i, "svalue": None,
                         "flags": 0} for i in range(n)]}


def _dtc(org: str, vehicle: str, code: str, ts: int) -> dict[str, Any]:
    return {"batch_id": f"d-{vehicle}-{code}", "source": "vehicle_client", "org_id": org, "fleet_id": "north",
            "vehicle_id": vehicle, "device_id": "dev", "name": "", "message_name": "DTC", "network_name": "CAN1",
            "ecu_name": "ECM", "ecu_id": "7E0", "arb_id": "", "file_id": "", "message_date": "",
            "dtcs": [{"dtc_id": code, "status": "2F", "description": f"code {code}", "timestamp_ms": ts,
                      "extended": [], "snapshot": []}]}


def _kpi(vehicle: str, name: str, value: float, end_ms: int, unit: str = "score") -> dict[str, Any]:
    return {"scope": "vehicle", "scope_id": vehicle, "name": name, "value": value, "unit": unit,
            "period_start_ms": end_ms - 5 * MIN_MS, "period_end_ms": end_ms, "dimensions": {"fleet_id": "north"},
            "computed_at_ms": end_ms}


def _alert(alert_id: str, vehicle: str, severity: str, started: int, ended: int | None = None) -> dict[str, Any]:
    return {"alert_id": alert_id, "event": "resolved" if ended else "fired", "kind": "threshold",
            "rule_id": "over_rev", "key": vehicle, "channel": "EngineSpeed", "severity": severity, "comparator": ">",
            "threshold": 6200.0, "value": 6500.0, "started_ms": started, "ended_ms": ended, "message": "over rev"}


def _window(vehicle: str, start: int) -> dict[str, Any]:
    return {"key": vehicle, "source_topic": "telemetry.signals.valid", "channel": "EngineSpeed", "unit": "rpm",
            "window_kind": "tumbling", "window_start_ms": start, "window_end_ms": start + MIN_MS, "count": 60,
            "min": 900.0, "max": 1500.0, "mean": 1200.0, "last": 1100.0, "p95": 1450.0}


def _dyno(station: str, run_id: str, channel: str, unit: str, start: int, values: list[float]) -> dict[str, Any]:
    return {"batch_id": f"y-{run_id}-{channel}", "source": "jetdrive", "station_id": station, "provider": "JD",
            "run_id": run_id, "channel": channel, "unit": unit, "sensor_state": "ok",
            "samples": [{"timestamp_ms": start + i * 100, "value": v, "flags": 0} for i, v in enumerate(values)]}


def _dead_letter(vehicle: str, offset: int, ts: int) -> dict[str, Any]:
    return {"source_topic": "telemetry.signals", "partition": 0, "offset": offset, "key": vehicle.encode(),
            "original": b"x", "stage": "validate", "error_code": "out_of_range", "reason": "rpm above hard max",
            "sample_count": 3, "first_seen_ms": ts, "attempt": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records(w: World) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    """Stream name → (key, record type, record) for the world's data."""
    t0, (a1, a2, a3), b1 = w.t0_ms, w.vehicles_a, w.vehicle_b
    al = w.alerts
    return {
        "signals": [(v, "signal_batch", _signal(org, v, t0, 20)) for org, v in
                    ((w.org_a, a1), (w.org_a, a2), (w.org_a, a3), (w.org_b, b1))]
        + [(v, "signal_batch", _signal(w.org_a, v, t0 + 3 * HOUR_MS + 30 * MIN_MS, 5)) for v in (a1, a2)],
        "dyno": [(w.station, "dyno_sample_batch", _dyno(w.station, w.run_id, ch, unit, t0 + HOUR_MS, vals))
                 for ch, unit, vals in (("power", "hp", [100.0, 250.0, 310.5, 290.0]),
                                        ("torque", "ft-lb", [300.0, 420.0, 400.0, 380.0]),
                                        ("engine_speed", "rpm", [3000.0, 4000.0, 5000.0, 6000.0]))],
        "dtcs": [(v, "dtc_batch", _dtc(org, v, code, t0 + 5 * MIN_MS)) for org, v, code in
                 ((w.org_a, a1, "P0301"), (w.org_a, a2, "P0301"), (w.org_a, a3, "P0420"), (w.org_b, b1, "P0301"))],
        "kpis": [(v, "kpi", _kpi(v, "health_score", value, t0 + m * MIN_MS)) for v, value, m in
                 ((a1, 95.0, 5), (a1, 60.0, 10), (a2, 80.0, 5), (a3, 20.0, 5), (b1, 99.0, 5))]
        + [(v, "kpi", _kpi(v, "uptime_pct", value, t0 + m * MIN_MS, "%")) for v, value, m in
           ((a1, 90.0, 5), (a1, 70.0, 10), (a2, 100.0, 5), (b1, 50.0, 5))],
        "alerts": [(a1, "alert", _alert(al["a1"], a1, "critical", t0 + 10 * MIN_MS)),
                   (a1, "alert", _alert(al["a1"], a1, "critical", t0 + 10 * MIN_MS, t0 + 20 * MIN_MS)),
                   (a2, "alert", _alert(al["a2"], a2, "warning", t0 + 30 * MIN_MS)),
                   (a3, "alert", _alert(al["a3"], a3, "critical", t0 + 40 * MIN_MS)),
                   (b1, "alert", _alert(al["b1"], b1, "critical", t0 + 50 * MIN_MS))],
        "windows": [(a1, "window_aggregate", _window(a1, t0 + i * MIN_MS)) for i in range(3)]
        + [(b1, "window_aggregate", _window(b1, t0))],
        "dead_letters": [(a1, "dead_letter", _dead_letter(a1, 7, t0 + MIN_MS)),
                         (b1, "dead_letter", _dead_letter(b1, 8, t0 + MIN_MS))],
    }


_ROUTES = {"signals": rows.Route("samples", "signal_batch"), "dyno": rows.Route("samples", "dyno_sample_batch"),
           "dtcs": rows.Route("dtcs", "dtc_batch"), "kpis": rows.Route("kpis", "kpi"),
           "alerts": rows.Route("alerts", "alert"), "windows": rows.Route("window_aggregates", "window_aggregate"),
           "dead_letters": rows.DEAD_LETTERS, "acks": rows.Route("alert_acks", "alert_ack"),
           "audit": rows.Route("audit_log", "audit_entry"), "gps": rows.Route("gps_points", "gps_batch"),
           "events": rows.Route("analytics_events", "analytics_event"),
           "metric_values": rows.Route("metric_values", "metric_value"),
           "definitions": rows.Route("analytics_definitions", "analytics_definition"),
           "reports": None}


def _produce(bootstrap: str, topics: dict[str, str], records: dict[str, list[tuple[str, str, dict[str, Any]]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for stream, items in records.items():
        for key, record_type, record in items:
            producer.produce(topics[stream], encode(record_type, record), key=key.encode())
    assert producer.flush(30) == 0


def _wait_for_endpoint(settings: Settings, timeout_s: float = 60.0) -> None:
    """The sink owns the store once its query endpoint is announced; before that nobody may open it here."""
    deadline = time.monotonic() + timeout_s
    while discover(embedded_path(settings.clickhouse_dsn)) is None:
        assert time.monotonic() < deadline, "the sink's query endpoint did not come up"
        time.sleep(0.2)


def _wait_stored(w: World, expected: dict[str, int], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {t: int(w.sql(f"SELECT count() AS n FROM fleetstream.{t}")[0]["n"]) for t in expected}
        if all(counts[t] >= n for t, n in expected.items()):
            return
        time.sleep(0.5)
    raise AssertionError(f"not stored in time: {counts} < {expected}")


def _users(w: World, services: Services) -> None:
    a1, a2, _a3 = w.vehicles_a
    for name, org, role, vehicles in (
            ("admin", w.org_a, Role.ADMIN, ()), ("fm", w.org_a, Role.FLEET_MANAGER, ()),
            ("owner", w.org_a, Role.OWNER, (a1,)), ("tech", w.org_a, Role.TECHNICIAN, (a2,)),
            ("exec", w.org_a, Role.EXECUTIVE, ()), ("support", w.org_a, Role.SUPPORT, ()),
            ("fm_b", w.org_b, Role.FLEET_MANAGER, ()), ("admin_b", w.org_b, Role.ADMIN, ()),
            ("owner_b", w.org_b, Role.OWNER, (w.vehicle_b,))):
        w.users[name] = services.users.add(w.username(name), PASSWORD, org, role, vehicles)


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    uid = uuid.uuid4().hex[:8]
    t0 = (int(time.time() * 1000) // HOUR_MS - 6) * HOUR_MS
    home = tmp_path_factory.mktemp("api")
    topics = {s: f"test.api.{s}.{uid}" for s in _ROUTES}
    ensure_topics(kafka_bootstrap, list(topics.values()), partitions=1)
    settings = load_settings(
        home=home, kafka={"bootstrap_servers": kafka_bootstrap},
        clickhouse={"dsn": f"chdb://{home / 'store'}", "query_port": 0, "batch_seconds": 0.3},
        api={"jwt_secret": SECRET, "users_topic": f"test.api.users.{uid}", "acks_topic": topics["acks"],
             "audit_topic": topics["audit"], "events_topic": topics["events"],
             "metric_values_topic": topics["metric_values"], "definitions_topic": topics["definitions"],
             "reports_topic": topics["reports"], "default_org": f"acme-{uid}", "cache_ttl_s": 300})
    w = World(uid, t0, settings, "", f"acme-{uid}", f"beta-{uid}", [f"a{i}-{uid}" for i in (1, 2, 3)],
              f"b1-{uid}", f"cell-{uid}", f"run-{uid}", {k: f"al-{k}-{uid}" for k in ("a1", "a2", "a3", "b1")})
    sink = ClickHouseSink(settings, routes={topics[s]: r for s, r in _ROUTES.items() if r}, subscribe_dlq=False,
                          group_id=f"api-{uid}")
    stop = threading.Event()
    sink_thread = threading.Thread(target=sink.run, args=(stop,), name="sink", daemon=True)
    sink_thread.start()
    _wait_for_endpoint(settings)
    _produce(kafka_bootstrap, topics, _records(w))
    _wait_stored(w, {"samples": 102, "dtcs": 4, "kpis": 9, "alerts": 5, "window_aggregates": 4, "dead_letters": 2})
    services = Services.start(settings)
    _users(w, services)
    port = free_port()
    server = uvicorn.Server(server_config(create_app(services), "127.0.0.1", port))
    server_thread = threading.Thread(target=server.run, name="api", daemon=True)
    server_thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    w.base_url, w.app, w.services, w.sink = f"http://127.0.0.1:{port}", server.config.app, services, sink
    w.app.state.live_max_s = 3.0  # event streams end after 3 s, so a test reading a whole response gets one
    try:
        yield w
    finally:
        server.should_exit = True
        server_thread.join(15)
        services.close()
        stop.set()
        sink_thread.join(30)


@pytest.fixture(scope="module")
def home(world: World) -> Path:
    return world.settings.home
