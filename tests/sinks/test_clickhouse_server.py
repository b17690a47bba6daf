"""The sink on a ClickHouse server (HTTP), the engine fallback for servers without EmbeddedRocksDB, and /metrics.

The server test uses the session's `clickhouse_dsn`: a server when CLICKHOUSE_DSN names one or a Docker engine
answers (testcontainers), else it is skipped with the reason. The rest runs on the embedded engine.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetstream.config import load_settings
from fleetstream.health import PartHealth
from fleetstream.prometheus import PartMetrics, SinkMetrics
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.endpoint import SinkEndpoint
from fleetstream.sinks.clickhouse.inserts import insert_batch
from fleetstream.sinks.clickhouse.migrations import fallback_statement, load_migrations, migrate, status
from fleetstream.sinks.clickhouse.offsets import InFlight, OffsetStore, RangeState
from fleetstream.sinks.clickhouse.rows import SourcedRecord
from fleetstream.store.client import DATABASE, Client, connect, is_embedded
from fleetstream.store.query_server import execute_read_only
from fleetstream.testing import docker_available

NOW_MS = (int(time.time()) // 3600 - 2) * 3600 * 1000


def signal(vehicle: str, n: int, start_ms: int = NOW_MS) -> dict[str, object]:
    return {"batch_id": "b", "source": "sim", "org_id": "org", "fleet_id": "fleet", "vehicle_id": vehicle,
            "device_id": "d", "name": "EngineSpeed", "unit": "rpm",
            "samples": [{"timestamp_ms": start_ms + i * 10, "value": float(i), "svalue": None, "flags": 0}
                        for i in range(n)]}


@pytest.mark.integration
def test_migrations_insert_replay_and_query_on_a_server(clickhouse_dsn: str) -> None:
    if is_embedded(clickhouse_dsn):
        ok, why = docker_available()
        pytest.skip(f"no Docker engine answers: {why}" if not ok else "the session's ClickHouse is embedded")
    client = connect(clickhouse_dsn)
    try:
        migrate(client)
        assert all(s.applied for s in status(client))
        vehicle = f"srv-{uuid.uuid4().hex[:8]}"
        records = [SourcedRecord(signal(vehicle, 500, NOW_MS + k * 86_400_000 // 2), "srv.topic", 0, k)
                   for k in range(4)]
        table = rows.samples_arrow("signal_batch", records)
        for _ in range(2):  # the replay stores nothing, in samples and in the rollups
            insert_batch(client, "samples", table, f"srv.topic-0-0-3-{vehicle}")
        insert_batch(client, "alerts", rows.to_columns("alert", [SourcedRecord(
            {"alert_id": vehicle, "event": "fired", "kind": "threshold", "rule_id": "r", "key": vehicle,
             "channel": "rpm", "severity": "warning", "comparator": ">", "threshold": 1.0, "value": 2.0,
             "started_ms": NOW_MS, "ended_ms": None, "message": ""}, "a", 0, 0)]), f"a-0-0-0-{vehicle}")
        result = execute_read_only(
            client, f"SELECT count(), (SELECT sum(samples) FROM {DATABASE}.samples_1m WHERE vehicle_id = {{v:String}}),"
                    f" (SELECT count() FROM {DATABASE}.alerts WHERE key = {{v:String}}) "
                    f"FROM {DATABASE}.samples WHERE vehicle_id = {{v:String}}", {"v": vehicle})
        assert result.rows == [[2000, 2000, 1]]
        offsets = OffsetStore(client, f"g-{vehicle}")
        offsets.mark("t", 0, 0, 9, RangeState.BEFORE)
        offsets.mark("t", 0, 0, 9, RangeState.AFTER)
        assert offsets.load([("t", 0)]) == {("t", 0): InFlight(0, 9, RangeState.AFTER)}
    finally:
        client.close()


@pytest.fixture
def fallback_store(tmp_path: Path) -> Iterator[Client]:
    client = connect(f"chdb://{tmp_path / 'store'}")
    migrate(client, unavailable_engines=frozenset({"EmbeddedRocksDB"}))
    yield client
    client.close()


def test_sink_offsets_fall_back_to_replacing_merge_tree(fallback_store: Client) -> None:
    engine = fallback_store.query(f"SELECT engine FROM system.tables WHERE database = '{DATABASE}' "
                                  "AND name = 'sink_offsets'").result_rows
    assert engine == [("ReplacingMergeTree",)]
    offsets = OffsetStore(fallback_store, "g")
    # many writes within one millisecond: the newest state still wins before any merge
    for first in range(0, 50, 10):
        offsets.mark("t", 0, first, first + 9, RangeState.BEFORE)
        offsets.mark("t", 0, first, first + 9, RangeState.AFTER)
    offsets.mark("t", 0, 50, 59, RangeState.BEFORE)
    offsets.mark("t", 1, 0, 4, RangeState.BEFORE)
    offsets.mark("t", 1, 0, 4, RangeState.AFTER)
    assert offsets.load([("t", 0), ("t", 1)]) == {("t", 0): InFlight(50, 59, RangeState.BEFORE),
                                                  ("t", 1): InFlight(0, 4, RangeState.AFTER)}
    fallback_store.command(f"OPTIMIZE TABLE {DATABASE}.sink_offsets FINAL")
    assert offsets.load([("t", 0)]) == {("t", 0): InFlight(50, 59, RangeState.BEFORE)}


def test_fallback_statement_rewrites_only_the_engine_clause() -> None:
    (migration,) = [m for m in load_migrations() if m.name == "sink_offsets"]
    (statement,) = migration.statements({"retention_days": "1"})
    rewritten = fallback_statement(statement, "EmbeddedRocksDB")
    assert "EmbeddedRocksDB" not in rewritten
    assert rewritten.endswith("ENGINE = ReplacingMergeTree(updated_at) ORDER BY key")
    with pytest.raises(ValueError, match="no EmbeddedRocksDB clause"):
        fallback_statement("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", "EmbeddedRocksDB")


def test_metrics_and_health_on_the_sink_endpoint(fallback_store: Client, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, clickhouse={"dsn": f"chdb://{tmp_path / 'store'}", "query_port": 0})
    metrics = SinkMetrics()
    metrics.rows.labels("samples").inc(1234)
    metrics.batches.labels("samples").inc(2)
    metrics.replayed_skipped.inc(3)
    metrics.insert_seconds.labels("samples").observe(0.02)
    health = PartHealth("clickhouse_sink", settings.kafka, settings.health, "",
                        metrics=PartMetrics("clickhouse_sink", metrics.registry))
    with SinkEndpoint(fallback_store, settings, health) as endpoint:
        base = f"http://127.0.0.1:{endpoint.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        with urllib.request.urlopen(f"{base}/health/live", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
        # never probed and never assigned: not ready (a sink's /health no longer says ok whatever happens)
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/health", timeout=10)
        assert not_ready.value.code == 503
        assert json.loads(not_ready.value.read())["checks"]["assignment"] == "waiting for the first assignment"
        request = urllib.request.Request(f"{base}/query", data=json.dumps({"sql": "SELECT 1 AS one"}).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["rows"] == [[1]]
    assert 'fleetstream_sink_rows_total{table="samples"} 1234.0' in text
    assert 'fleetstream_sink_batches_total{table="samples"} 2.0' in text
    assert "fleetstream_sink_replayed_skipped_total 3.0" in text
    assert 'fleetstream_sink_insert_seconds_count{table="samples"} 1.0' in text
