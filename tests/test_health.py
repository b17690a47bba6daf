"""The shared health endpoint and metrics (unit: fake checks; integration: real parts, real broker gone and back)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import HealthSettings, KafkaSettings, load_settings
from fleetstream.errors import ConfigError
from fleetstream.health import HealthAddressInUse, PartHealth, announced


class _Metadata:
    def __init__(self, brokers: int) -> None:
        self.brokers = {i: object() for i in range(brokers)}


class _Admin:
    """An AdminClient whose cluster can be switched off; no groups (lag stays empty)."""

    def __init__(self) -> None:
        self.up = True

    def list_topics(self, timeout: float) -> _Metadata:
        if not self.up:
            raise RuntimeError("KafkaError{code=_TRANSPORT}")
        return _Metadata(3)


def fetch(address: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def health_with(admin: _Admin, tmp_path: Path, store: Any = None, **kwargs: Any) -> PartHealth:
    health = PartHealth("worker", KafkaSettings(), HealthSettings(probe_interval_s=0.1, probe_timeout_s=0.5),
                        "127.0.0.1:0", home=tmp_path, store=store, **kwargs)
    health._admin = admin
    return health


def test_ready_follows_kafka_store_and_assignment_live_does_not(tmp_path: Path) -> None:
    admin, store_up = _Admin(), [True]

    def store() -> str:
        if not store_up[0]:
            raise ConnectionError("connection refused")
        return "24.8"

    with health_with(admin, tmp_path, store=store) as health:
        address = health.address
        assert address is not None
        assert fetch(address, "/health/ready")[1]["checks"]["assignment"] == "waiting for the first assignment"
        health.assigned(6)
        assert fetch(address, "/health/ready") == (200, fetch(address, "/health")[1])
        assert fetch(address, "/health")[1]["checks"] == {"kafka": "ok", "store": "ok (24.8)", "assignment": "ok"}

        admin.up = False
        time.sleep(0.8)
        status, body = fetch(address, "/health/ready")
        assert status == 503 and body["checks"]["kafka"].startswith("unreachable")
        assert fetch(address, "/health/live")[0] == 200

        admin.up, store_up[0] = True, False
        time.sleep(0.8)
        status, body = fetch(address, "/health/ready")
        assert status == 503 and body["checks"] == {"kafka": "ok", "store": "unavailable: connection refused",
                                                     "assignment": "ok"}
        store_up[0] = True
        health.revoked()
        time.sleep(0.8)
        assert fetch(address, "/health/ready")[1]["checks"]["assignment"] == "rebalancing"
        health.assigned(3)
        health.error("insert into samples: timed out")
        status, body = fetch(address, "/health")
        assert status == 200 and body["last_error"] == "insert into samples: timed out"
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            text = response.read().decode()
    assert 'fleetstream_rebalances_total{part="worker"} 2.0' in text
    assert 'fleetstream_ready{part="worker"} 1.0' in text
    assert 'fleetstream_errors_total{part="worker"} 1.0' in text


def test_a_store_check_that_hangs_reads_as_not_ready(tmp_path: Path) -> None:
    with health_with(_Admin(), tmp_path, store=lambda: time.sleep(30), needs_assignment=False) as health:
        assert health.snapshot()["checks"]["store"] == "unavailable: no answer within 0.5 s"
        assert not health.ready()


def test_lag_per_partition_comes_from_the_part_and_reaches_health_and_metrics(tmp_path: Path) -> None:
    lag = {("telemetry.signals", 0): 5, ("telemetry.signals", 2): 0}
    with health_with(_Admin(), tmp_path, group="fleetstream-streams", lag=lambda: lag) as health:
        assert health.snapshot()["lag"] == {"fleetstream-streams": {"telemetry.signals[0]": 5,
                                                                    "telemetry.signals[2]": 0}}
        text = health.metrics.exposition().decode()
    assert ('fleetstream_consumer_lag{group="fleetstream-streams",part="worker",partition="0",'
            'topic="telemetry.signals"} 5.0') in text


def test_parts_announce_their_address_under_the_home_until_they_stop(tmp_path: Path) -> None:
    with health_with(_Admin(), tmp_path, needs_assignment=False) as health:
        assert [(a["part"], a["address"]) for a in announced(tmp_path)] == [("worker", health.address)]
    assert announced(tmp_path) == []


def test_a_taken_health_address_is_one_error_with_a_hint(tmp_path: Path) -> None:
    with health_with(_Admin(), tmp_path, needs_assignment=False) as first:
        assert first.address is not None
        second = PartHealth("worker", KafkaSettings(), HealthSettings(), first.address)
        second._admin = _Admin()
        with pytest.raises(HealthAddressInUse, match="cannot listen on") as caught:
            second.start()
        assert "FLEETSTREAM_HEALTH__WORKER" in str(caught.value.hint)


@pytest.mark.parametrize("address", ["9401", "host:", "host:99999", ":9401"])
def test_health_addresses_are_checked_when_the_config_loads(address: str) -> None:
    with pytest.raises(ConfigError, match=r"health\.worker"):
        load_settings(health={"worker": address})
    assert load_settings(health={"worker": ""}).health.worker == ""


# --- integration: real parts, a real broker killed and restarted, a real backend stopped and restarted ---------


def wait_for_status(address: str, wanted: int, timeout_s: float) -> tuple[float, dict[str, Any]]:
    """Poll /health/ready until it answers `wanted`; (seconds it took, last body). AssertionError on timeout."""
    started = time.monotonic()
    body: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        try:
            status, body = fetch(address, "/health/ready")
        except OSError as exc:  # not listening yet
            status, body = 0, {"error": str(exc)}
        if status == wanted:
            return time.monotonic() - started, body
        time.sleep(0.2)
    raise AssertionError(f"/health/ready of {address} did not answer {wanted} within {timeout_s} s: {body}")


@pytest.mark.integration
@pytest.mark.slow
def test_sink_and_worker_are_not_ready_within_10_s_of_their_broker_dying_and_ready_after_it_returns(
        tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading

    from fleetstream.admin import create_topics
    from fleetstream.sinks.clickhouse import ClickHouseSink
    from fleetstream.stack import KafkaStack
    from fleetstream.testing import free_ports, local_stack_settings

    stack = KafkaStack(local_stack_settings(tmp_path / "stack"))
    status = stack.up(timeout_s=120)
    sink_port, worker_port = free_ports(2)
    settings = load_settings(home=tmp_path / "home", kafka={"bootstrap_servers": status.bootstrap},
                             clickhouse={"dsn": f"chdb://{tmp_path / 'store'}", "query_port": 0},
                             health={"clickhouse_sink": f"127.0.0.1:{sink_port}", "probe_interval_s": 1.0})
    create_topics(settings.kafka, settings.topics)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": status.bootstrap, "FLEETSTREAM_HOME": str(tmp_path / "home"),
           "FLEETSTREAM_HEALTH__WORKER": f"127.0.0.1:{worker_port}", "FLEETSTREAM_HEALTH__PROBE_INTERVAL_S": "1"}
    log_file = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "fleetstream", "worker"], env=env, stdout=log_file,
                              stderr=subprocess.STDOUT, start_new_session=True)
    sink = ClickHouseSink(settings)
    stop = threading.Event()
    runner = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    runner.start()
    parts = {"clickhouse_sink": f"127.0.0.1:{sink_port}", "worker": f"127.0.0.1:{worker_port}"}
    try:
        for address in parts.values():
            wait_for_status(address, 200, 120)

        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)
        for part, address in parts.items():
            _, body = wait_for_status(address, 503, 10)
            assert body["checks"]["kafka"].startswith("unreachable"), (part, body)
            assert fetch(address, "/health/live")[0] == 200

        stack.up(timeout_s=120)
        for part, address in parts.items():
            _, body = wait_for_status(address, 200, 60)
            assert body["checks"]["kafka"] == "ok", (part, body)
        with urllib.request.urlopen(f"http://{parts['worker']}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'fleetstream_rebalances_total{part="worker"}' in text
        assert "fleetstream_consumer_lag" in text or "fleetstream_ready" in text
    finally:
        stop.set()
        runner.join(timeout=60)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log_file.close()
        stack.down()


@pytest.mark.integration
def test_graphql_sink_is_not_ready_while_its_backend_is_gone(kafka_bootstrap: str, tmp_path: Path) -> None:
    import threading

    from fleetstream.admin import create_topics
    from fleetstream.sinks.graphql import GraphQLForwarder
    from fleetstream.sinks.graphql.contract_backend import ContractBackend
    from fleetstream.testing import free_ports

    backend_port, health_port = free_ports(2)
    backend = ContractBackend(port=backend_port).start()
    settings = load_settings(home=tmp_path, kafka={"bootstrap_servers": kafka_bootstrap},
                             graphql_endpoint=backend.url,
                             health={"graphql_sink": f"127.0.0.1:{health_port}", "probe_interval_s": 1.0})
    create_topics(settings.kafka, settings.topics)
    forwarder = GraphQLForwarder(settings)
    stop = threading.Event()
    runner = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    runner.start()
    address = f"127.0.0.1:{health_port}"
    try:
        wait_for_status(address, 200, 60)
        backend.stop()
        _, body = wait_for_status(address, 503, 10)
        assert body["checks"]["store"].startswith("unavailable: cannot reach the GraphQL backend")
        backend = ContractBackend(port=backend_port).start()
        _, body = wait_for_status(address, 200, 10)
        assert body["checks"]["store"] == "ok"
    finally:
        stop.set()
        runner.join(timeout=30)
        backend.stop()
