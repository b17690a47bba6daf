"""The ClickHouse sink: migrations, row mapping, batching, exactly-once inserts, and (marked) the Kafka loop."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import Settings, load_settings
from fleetstream.schemas.codec import encode
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.batches import Buffered, PartitionBatcher
from fleetstream.sinks.clickhouse.consumer import ClickHouseSink, dlq_topic_for
from fleetstream.sinks.clickhouse.migrations import MIGRATIONS_DIR, MigrationError, load_migrations, migrate, status
from fleetstream.sinks.clickhouse.offsets import InFlight, OffsetStore, RangeState
from fleetstream.sinks.clickhouse.rows import SourcedRecord
from fleetstream.store.client import DATABASE, Client, connect

NOW_MS = (int(time.time()) // 3600 - 2) * 3600 * 1000  # two hours ago, on the hour: inside any retention


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Client]:
    """A migrated embedded store of its own (chDB allows one open store per process: closed after the test)."""
    client = connect(f"chdb://{tmp_path / 'store'}")
    migrate(client)
    yield client
    client.close()


def count(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


# records of every type, as the codec decodes them


def signal_batch(
    vehicle: str = "veh-1", n: int = 3, start_ms: int = NOW_MS, name: str = "EngineSpeed"
) -> dict[str, Any]:
    return {"batch_id": f"b-{vehicle}-{start_ms}", "source": "simulator", "org_id": "org", "fleet_id": "fleet",
            "vehicle_id": vehicle, "device_id": "dev-1", "name": name, "unit": "rpm", "message_name": "",
            "network_name": "", "ecu_name": "", "ecu_id": "", "arb_id": "", "file_id": "", "message_date": "",
            "param_type": "NUMBER", "signal_type": "SIGNAL", "param_id": "",
            "samples": [{"timestamp_ms": start_ms + i * 100, "value": 1000.0 + i, "svalue": None, "flags": i % 2}
                        for i in range(n)]}


def dyno_batch(n: int = 2) -> dict[str, Any]:
    return {"batch_id": "d1", "source": "jetdrive", "station_id": "cell-1", "provider": "JD1", "run_id": "run-7",
            "channel": "power", "unit": "hp", "sensor_state": "ok",
            "samples": [{"timestamp_ms": NOW_MS + i, "value": 100.0 * (i + 1), "flags": 0} for i in range(n)]}


RECORDS: dict[str, dict[str, Any]] = {
    "signal_batch": signal_batch(),
    "dyno_sample_batch": dyno_batch(),
    "dtc_batch": {"batch_id": "t1", "source": "vehicle_client", "org_id": "org", "fleet_id": "fleet",
                  "vehicle_id": "veh-1", "device_id": "dev-1", "name": "", "message_name": "DTC",
                  "network_name": "CAN1",
                  "ecu_name": "ECM", "ecu_id": "7E0", "arb_id": "", "file_id": "", "message_date": "",
                  "dtcs": [{"dtc_id": "P0301", "status": "2F", "description": "misfire", "timestamp_ms": NOW_MS,
                            "extended": ["01"], "snapshot": []},
                           {"dtc_id": "P0302", "status": "2F", "description": "misfire 2", "timestamp_ms": NOW_MS + 1,
                            "extended": [], "snapshot": ["aa", "bb"]}]},
    "gps_batch": {"batch_id": "g1", "source": "vehicle_client", "org_id": "org", "fleet_id": "fleet",
                  "vehicle_id": "veh-1", "device_id": "dev-1",
                  "points": [{"timestamp_ms": NOW_MS, "latitude": 42.1, "longitude": -83.2, "accuracy_m": 3.0,
                              "altitude_m": None, "speed": 12.5, "bearing_deg": 90.0,
                              "available": {"accuracy": True, "altitude": False, "bearing": True, "speed": True,
                                            "time": False}},
                             {"timestamp_ms": NOW_MS + 1000, "latitude": None, "longitude": None, "accuracy_m": None,
                              "altitude_m": None, "speed": None, "bearing_deg": None, "available": None}]},
    "network_stats": {"batch_id": "n1", "source": "vehicle_client", "org_id": "org", "fleet_id": "fleet",
                      "vehicle_id": "veh-1", "device_id": "dev-1", "timestamp_ms": NOW_MS, "name": "CAN1",
                      "upload_id": 5, "file_id": "f", "total_messages": 100, "matched_messages": 90,
                      "unmatched_messages": 8, "error_messages": 2, "long_message_parts": 0, "min_time_ms": NOW_MS - 10,
                      "max_time_ms": None, "rate": 50.0},
    "fleet_location_batch": {"batch_id": "l1", "provider": "motive", "provider_vehicle_id": "m-1", "vin": "VIN1",
                             "fleet_number": None,
                             "locations": [{"timestamp_ms": NOW_MS, "latitude": 1.5, "longitude": 2.5,
                                            "speed_mph": 30.0, "heading_degrees": None, "engine_state": "On",
                                            "driver_id": None,
                                            "driver_name": None, "location_description": "here",
                                            "odometer_miles": 1234.5}]},
    "fleet_fault_batch": {"batch_id": "f1", "provider": "samsara", "provider_vehicle_id": "s-1", "vin": None,
                          "fleet_number": "12",
                          "faults": [{"fault_id": "x1", "code": "SPN100", "description": None, "status": "open",
                                      "first_observed_ms": NOW_MS, "last_observed_ms": NOW_MS + 5,
                                      "source_address": "0"}]},
    "window_aggregate": {"key": "veh-1", "source_topic": "telemetry.signals.valid", "channel": "engine_speed",
                         "unit": "rpm", "window_kind": "tumbling", "window_start_ms": NOW_MS,
                         "window_end_ms": NOW_MS + 60_000, "count": 10, "min": 1.0, "max": 9.0, "mean": 5.0,
                         "last": 9.0, "p95": 8.5},
    "kpi": {"scope": "vehicle", "scope_id": "veh-1", "name": "uptime_pct", "value": 99.5, "unit": "%",
            "period_start_ms": NOW_MS, "period_end_ms": NOW_MS + 3_600_000, "dimensions": {"fleet": "fleet"},
            "computed_at_ms": NOW_MS + 3_600_000},
    "alert": {"alert_id": "a1", "event": "fired", "kind": "threshold", "rule_id": "rpm-high", "key": "veh-1",
              "channel": "engine_speed", "severity": "warning", "comparator": ">", "threshold": 6000.0,
              "value": 6500.0, "started_ms": NOW_MS, "ended_ms": None, "message": "rpm high"},
    "dead_letter": {"source_topic": "telemetry.signals", "partition": 2, "offset": 41, "key": b"veh-1",
                    "original": b"\x00\x01garbage", "stage": "validate", "error_code": "out_of_range",
                    "reason": "rpm above 20000", "sample_count": 4, "first_seen_ms": NOW_MS, "attempt": 1},
    "analytics_event": {"event_id": "e1", "org_id": "org", "event_type": "click", "event_name": "open_report",
                        "user_id": "u1", "session_id": "s1", "vehicle_id": "veh-1", "source": "web",
                        "properties_json": '{"button": "pdf"}', "context_json": "{}", "timestamp_ms": NOW_MS,
                        "received_ms": NOW_MS + 5, "tracked_by": "api-user"},
    "metric_value": {"value_id": "v1", "org_id": "org", "metric": "active_users", "metric_type": "gauge",
                     "value": 150.0, "unit": "users", "dimensions": {"region": "north"}, "timestamp_ms": NOW_MS,
                     "recorded_by": "api-user"},
    "analytics_definition": {"org_id": "org", "kind": "metric", "name": "active_users",
                             "body_json": '{"metric_type": "gauge"}', "deleted": False, "updated_ms": NOW_MS,
                             "updated_by": "api-user"},
}
EXPECTED_ROWS = {"signal_batch": 3, "dyno_sample_batch": 2, "dtc_batch": 2, "gps_batch": 2, "network_stats": 1,
                 "fleet_location_batch": 1, "fleet_fault_batch": 1, "window_aggregate": 1, "kpi": 1, "alert": 1,
                 "dead_letter": 1, "analytics_event": 1, "metric_value": 1, "analytics_definition": 1}
TABLE_OF = {**{r.record_type: r.table for r in rows.ROUTES.values()}, "dead_letter": "dead_letters"}


def sourced(record_type: str, offset: int = 7, topic: str = "t") -> SourcedRecord:
    return SourcedRecord(RECORDS[record_type], topic, 1, offset, b"veh-1")


# migrations


def test_migrate_creates_every_table_and_is_idempotent(store: Client) -> None:
    tables = {r[0] for r in store.query(f"SHOW TABLES FROM {DATABASE}").result_rows}
    assert {"samples", "samples_1m", "samples_1h", "dead_letters", "dtcs", "gps_points", "network_stats",
            "fleet_locations", "fleet_faults", "window_aggregates", "kpis", "alerts", "sink_offsets",
            "schema_migrations"} <= tables
    assert migrate(store) == []
    assert count(store, f"SELECT count() FROM {DATABASE}.schema_migrations") == len(load_migrations())
    assert all(s.applied for s in status(store))


def test_status_lists_pending_migrations(tmp_path: Path, store: Client) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    (folder / "999_extra.sql").write_text("-- an extra table\nCREATE TABLE IF NOT EXISTS fleetstream.extra "
                                          "(a UInt8) ENGINE = MergeTree ORDER BY a;\n")
    pending = [s for s in status(store, load_migrations(folder)) if not s.applied]
    assert [(s.version, s.name) for s in pending] == [(999, "extra")]
    assert [m.name for m in migrate(store, migrations=load_migrations(folder))] == ["extra"]
    assert all(s.applied for s in status(store, load_migrations(folder)))


def test_changed_applied_migration_is_an_error(tmp_path: Path, store: Client) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    edited = folder / "004_dtcs.sql"
    edited.write_text(edited.read_text() + "\n-- edited after it ran\n")
    with pytest.raises(MigrationError, match="004_dtcs was changed"):
        migrate(store, migrations=load_migrations(folder))
    with pytest.raises(MigrationError, match="changed"):
        status(store, load_migrations(folder))
    edited.unlink()
    with pytest.raises(MigrationError, match="file is missing"):
        status(store, load_migrations(folder))


def test_misnamed_migration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "add_table.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNN_name"):
        load_migrations(tmp_path)


# row mapping


def test_topics_route_to_tables() -> None:
    assert rows.route("telemetry.signals.valid").table == rows.route("dyno.samples.valid").table == "samples"
    assert rows.route("dyno.samples.valid").record_type == "dyno_sample_batch"
    assert rows.route("analytics.threshold.exceeded").table == "alerts"
    assert rows.route("dlq.fleet.faults").table == "dead_letters"
    with pytest.raises(KeyError):
        rows.route("telemetry.signals")
    assert dlq_topic_for("telemetry.signals.valid") == "dlq.telemetry.signals.valid"  # dlq.<source topic>
    assert dlq_topic_for("analytics.kpi") == "dlq.analytics.kpi"


@pytest.mark.parametrize("record_type", sorted(RECORDS))
def test_every_record_type_maps_to_one_row_per_sample(record_type: str) -> None:
    columns = rows.to_columns(record_type, [sourced(record_type, 7), sourced(record_type, 8)])
    n = EXPECTED_ROWS[record_type]
    assert {len(v) for v in columns.values()} == {2 * n}
    assert rows.rows_of(record_type, RECORDS[record_type]) == n
    assert columns["kafka_offset"] == [7] * n + [8] * n
    assert columns["kafka_partition"] == [1] * 2 * n


def test_signal_samples_are_flattened_with_their_vehicle() -> None:
    cols = rows.to_columns("signal_batch", [sourced("signal_batch")])
    assert cols["vehicle_id"] == ["veh-1"] * 3
    assert cols["channel"] == ["EngineSpeed"] * 3
    assert cols["ts"] == [NOW_MS, NOW_MS + 100, NOW_MS + 200]
    assert cols["value"] == [1000.0, 1001.0, 1002.0]
    assert cols["flags"] == [0, 1, 0]
    assert cols["svalue"] == ["", "", ""]


def test_dyno_station_is_the_vehicle() -> None:
    cols = rows.to_columns("dyno_sample_batch", [sourced("dyno_sample_batch")])
    assert cols["vehicle_id"] == ["cell-1", "cell-1"]
    assert cols["run_id"] == ["run-7", "run-7"]
    assert cols["channel"] == ["power", "power"]
    assert cols["value"] == [100.0, 200.0]


def test_gps_availability_becomes_a_bit_mask() -> None:
    cols = rows.to_columns("gps_batch", [sourced("gps_batch")])
    assert cols["available_mask"] == [1 + 4 + 8, 0]
    assert cols["latitude"] == [42.1, None]


def test_dead_letter_keeps_its_source_coordinates_and_bytes() -> None:
    cols = rows.to_columns("dead_letter", [sourced("dead_letter", topic="dlq.telemetry.signals")])
    assert (cols["source_topic"], cols["source_partition"], cols["source_offset"]) == (
        ["telemetry.signals"], [2], [41])
    assert cols["original"] == [b"\x00\x01garbage"]
    assert cols["kafka_topic"] == ["dlq.telemetry.signals"]


def test_unreadable_dead_letter_is_stored_as_a_sink_dead_letter() -> None:
    rec = SourcedRecord({"original": b"junk"}, "dlq.telemetry.gps", 0, 3, b"k")
    cols = rows.dead_letter_columns_from_raw([(rec, "not Avro")], now_ms=NOW_MS)
    assert cols["stage"] == ["sink"] and cols["error_code"] == ["malformed"] and cols["reason"] == ["not Avro"]
    assert (cols["source_topic"], cols["source_offset"], cols["original"]) == (["dlq.telemetry.gps"], [3], [b"junk"])


@pytest.mark.parametrize("record_type", sorted(RECORDS))
def test_mapped_columns_insert_into_their_table(store: Client, record_type: str) -> None:
    """The mapping and the DDL agree: every column exists and takes the values."""
    columns = rows.to_columns(record_type, [sourced(record_type)])
    table = f"{DATABASE}.{TABLE_OF[record_type]}"
    store.insert(table, list(columns.values()), column_names=list(columns), column_oriented=True)
    assert count(store, f"SELECT count() FROM {table}") == EXPECTED_ROWS[record_type]


# exactly once


def insert_batch(client: Client, columns: rows.Columns, token: str, table: str = "samples") -> None:
    client.insert(f"{DATABASE}.{table}", list(columns.values()), column_names=list(columns), column_oriented=True,
                  settings={"insert_deduplication_token": token,
                            "deduplicate_blocks_in_dependent_materialized_views": 1})


def test_replayed_batch_is_stored_once(store: Client) -> None:
    records = [SourcedRecord(signal_batch(f"veh-{i}", n=50, start_ms=NOW_MS - i * 86_400_000), "s", 0, i)
               for i in range(3)]  # three days: one insert, three parts, three deduplicated blocks
    columns = rows.to_columns("signal_batch", records)
    insert_batch(store, columns, "telemetry.signals.valid-0-0-2")
    insert_batch(store, columns, "telemetry.signals.valid-0-0-2")
    assert count(store, f"SELECT count() FROM {DATABASE}.samples") == 150
    assert count(store, f"SELECT sum(samples) FROM {DATABASE}.samples_1m") == 150
    assert count(store, f"SELECT sum(samples) FROM {DATABASE}.samples_1h") == 150
    insert_batch(store, columns, "telemetry.signals.valid-0-3-5")  # another range is new data
    assert count(store, f"SELECT count() FROM {DATABASE}.samples") == 300


def test_offset_store_round_trip(store: Client) -> None:
    offsets = OffsetStore(store, "g")
    offsets.mark("t", 0, 10, 19, RangeState.BEFORE)
    offsets.mark("t", 0, 10, 19, RangeState.AFTER)
    offsets.mark("t", 1, 5, 6, RangeState.BEFORE)
    assert offsets.load([("t", 0), ("t", 1), ("t", 2)]) == {
        ("t", 0): InFlight(10, 19, RangeState.AFTER), ("t", 1): InFlight(5, 6, RangeState.BEFORE)}
    assert OffsetStore(store, "other").load([("t", 0)]) == {}


# batching


def item(offset: int, rows_: int = 10) -> Buffered:
    return Buffered(offset, None, b"", {}, None, rows_)


def test_batch_closes_at_row_limit_or_age() -> None:
    batcher = PartitionBatcher("t", 0)
    batcher.add(item(0), now=100.0)
    assert not batcher.due(100.5, batch_rows=20, batch_seconds=1.0)
    assert batcher.due(101.0, batch_rows=20, batch_seconds=1.0)
    batcher.add(item(1), now=100.2)
    assert batcher.due(100.3, batch_rows=20, batch_seconds=1.0)
    batch = batcher.take()
    assert (batch.first_offset, batch.last_offset, batch.rows, batch.token) == (0, 1, 20, "t-0-0-1")
    assert not batcher.due(1e9, 20, 1.0)


def test_unacknowledged_range_is_re_formed_exactly() -> None:
    batcher = PartitionBatcher("t", 3, InFlight(10, 12, RangeState.BEFORE))
    assert not batcher.admits(9) and batcher.admits(10)
    for offset in (10, 11):
        batcher.add(item(offset, 1_000_000), now=0.0)
        assert not batcher.due(1e9, batch_rows=1, batch_seconds=0.0)  # size and age do not cut a pinned batch
    batcher.add(item(12), now=0.0)
    assert batcher.due(0.0, 10**9, 1e9)
    assert batcher.take().token == "t-3-10-12"
    batcher.add(item(13), now=0.0)
    assert batcher.due(1.0, 10**9, 1.0)  # back to normal limits


def test_range_ends_where_it_was_recorded_even_across_an_offset_gap() -> None:
    batcher = PartitionBatcher("t", 0, InFlight(10, 12, RangeState.BEFORE))
    batcher.add(item(10), now=0.0)
    assert batcher.must_cut_before(14)  # 11 and 12 were transaction markers: the range still ends at 12
    assert batcher.take().token == "t-0-10-10"


def test_acknowledged_range_is_skipped() -> None:
    batcher = PartitionBatcher("t", 0, InFlight(10, 12, RangeState.AFTER))
    assert [o for o in range(8, 16) if batcher.admits(o)] == [13, 14, 15]
    assert batcher.pin is None


# the Kafka loop (real broker)


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value in messages:
        producer.produce(topic, value, key=key, partition=0)
    assert producer.flush(30) == 0


def sink_settings(bootstrap: str, store: Path, **clickhouse: Any) -> Settings:
    # dynamic membership: these tests run sinks one after another in one group with other topics, and a closed
    # static member would keep its partitions until its session times out (tests/sinks/test_sink_restart.py)
    return load_settings(home=store.parent, kafka={"bootstrap_servers": bootstrap},
                         clickhouse={"dsn": f"chdb://{store}", "query_port": 0, "batch_seconds": 0.5,
                                     "instance_id": "", **clickhouse})


class CrashBeforeCommit(Exception):
    pass


@pytest.mark.integration
def test_sink_stores_exactly_the_produced_records_and_a_replay_adds_nothing(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    signals = topic_factory(partitions=1)
    dlq = topic_factory(partitions=1)
    store = tmp_path / "store"
    batches = [signal_batch(f"veh-{i % 3}", n=100, start_ms=NOW_MS + i * 10_000) for i in range(30)]
    produce(kafka_bootstrap, signals, [(b["vehicle_id"].encode(), encode("signal_batch", b)) for b in batches]
            + [(b"veh-x", b"not avro at all")])
    routes = {signals: rows.Route("samples", "signal_batch")}
    group = f"it-{uuid.uuid4().hex[:8]}"
    settings = sink_settings(kafka_bootstrap, store, batch_rows=1_000)

    # 1. crash right after the first insert landed: its range is recorded `before`, nothing is committed
    crashing = ClickHouseSink(settings, routes=routes, subscribe_dlq=False, group_id=group,
                              dlq_topic=lambda _t: dlq, serve_queries=False)
    real_insert = crashing._insert

    def insert_then_crash(table: str, columns: rows.Columns, token: str) -> None:
        real_insert(table, columns, token)
        raise CrashBeforeCommit(token)

    crashing._insert = insert_then_crash  # type: ignore[method-assign]
    crashing.start()
    with pytest.raises(CrashBeforeCommit, match=f"^{signals}-0-0-9$"):
        for _ in range(200):
            crashing.poll_once(timeout_s=0.5)
    crashing.close(flush=False)
    assert crashing.stats.rows["samples"] == 1_000  # the first batch: 10 messages of 100 samples

    # 2. restart: the same range is re-formed and deduplicated, the rest is stored once
    sink = ClickHouseSink(settings, routes=routes, subscribe_dlq=False, group_id=group, dlq_topic=lambda _t: dlq,
                          serve_queries=False)
    stats = sink.run_until_idle(idle_s=3.0, max_s=120)
    assert stats.dead_letters == 1
    assert stats.rows["samples"] == 3_000  # 1,000 re-inserted (and deduplicated by ClickHouse) + 2,000 new
    client = connect(f"chdb://{store}")
    try:
        assert count(client, f"SELECT count() FROM {DATABASE}.samples") == 3_000
        assert count(client, f"SELECT uniqExact(vehicle_id, ts) FROM {DATABASE}.samples") == 3_000
        assert count(client, f"SELECT sum(samples) FROM {DATABASE}.samples_1m") == 3_000
        assert count(client, f"SELECT countDistinct(kafka_offset) FROM {DATABASE}.samples") == 30
    finally:
        client.close()

    # 3. the undecodable message went to the dead-letter topic; a sink on that topic stores it
    dlq_sink = ClickHouseSink(settings, routes={dlq: rows.DEAD_LETTERS}, subscribe_dlq=False, group_id=group,
                              serve_queries=False)
    dlq_sink.run_until_idle(idle_s=3.0, max_s=60)
    client = connect(f"chdb://{store}")
    try:
        row = client.query(f"SELECT source_topic, source_offset, stage, error_code, original "
                           f"FROM {DATABASE}.dead_letters").result_rows
        assert row == [(signals, 30, "sink", "malformed", "not avro at all")]
    finally:
        client.close()


@pytest.mark.integration
def test_sink_serves_queries_while_it_runs(kafka_bootstrap: str, topic_factory: Any, tmp_path: Path) -> None:
    from fleetstream.sinks.clickhouse.queries import run_query

    topic = topic_factory(partitions=1)
    produce(kafka_bootstrap, topic, [(b"veh-1", encode("signal_batch", signal_batch(n=25)))])
    settings = sink_settings(kafka_bootstrap, tmp_path / "store")
    sink = ClickHouseSink(settings, routes={topic: rows.Route("samples", "signal_batch")}, subscribe_dlq=False,
                          group_id=f"it-{uuid.uuid4().hex[:8]}")
    stop = threading.Event()
    runner = threading.Thread(target=sink.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sink.stats.rows["samples"] < 25:
            time.sleep(0.2)
        _, result = run_query(settings, "samples_per_vehicle_channel", {"vehicle": "veh-1"})
        assert [(r[0], r[1], r[3]) for r in result] == [("veh-1", "EngineSpeed", 25)]
    finally:
        stop.set()
        runner.join(30)
    assert not (tmp_path / "store" / "query_server.json").exists()


@pytest.mark.integration
def test_a_resent_batch_at_a_new_offset_is_stored_once(kafka_bootstrap: str, topic_factory: Any,
                                                      tmp_path: Path) -> None:
    """At-least-once upstream: the same batch (same batch_id) re-sent later, in the same and a later sink batch."""
    topic = topic_factory(partitions=1)
    first = [signal_batch(f"veh-{i}", n=10, start_ms=NOW_MS + i * 1_000) for i in range(3)]
    messages = [(b["vehicle_id"].encode(), encode("signal_batch", b)) for b in first]
    produce(kafka_bootstrap, topic, [*messages, messages[0]])  # a copy inside the same sink batch
    settings = sink_settings(kafka_bootstrap, tmp_path / "store")
    routes = {topic: rows.Route("samples", "signal_batch")}
    group = f"it-{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(settings, routes=routes, subscribe_dlq=False, group_id=group, serve_queries=False)
    sink.start()
    sink.run_until_idle(idle_s=2.0, max_s=60)
    produce(kafka_bootstrap, topic, messages[1:])  # copies arriving in a later batch
    sink.run_until_idle(idle_s=2.0, max_s=60)
    assert sink.stats.redelivered_skipped == 3
    count = sink.client.query("SELECT count(), uniqExact(vehicle_id, ts) FROM fleetstream.samples").result_rows[0]
    sink.close()
    assert count == (30, 30)


@pytest.mark.integration
def test_a_batch_id_reused_for_other_content_is_dead_lettered_and_a_true_copy_still_skipped(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    """Two sources (or runs) that reuse a batch id: the second one's records are a `batch_id_conflict` dead letter
    with their bytes, never skipped as if they were the first one's copy."""
    topic, dlq = topic_factory(partitions=1), topic_factory(partitions=1)
    first = [signal_batch(f"veh-{i}", n=10, start_ms=NOW_MS + i * 1_000) for i in range(3)]
    messages = [(b["vehicle_id"].encode(), encode("signal_batch", b)) for b in first]
    produce(kafka_bootstrap, topic, messages)
    settings = sink_settings(kafka_bootstrap, tmp_path / "store")
    group = f"it-{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(settings, routes={topic: rows.Route("samples", "signal_batch")}, subscribe_dlq=False,
                          group_id=group, dlq_topic=lambda _t: dlq, serve_queries=False)
    sink.start()
    sink.run_until_idle(idle_s=2.0, max_s=60)

    reused = {**signal_batch("veh-0", n=7, start_ms=NOW_MS + 500_000), "batch_id": first[0]["batch_id"]}
    fresh = signal_batch("veh-9", n=4, start_ms=NOW_MS + 900_000)
    fresh_reused = {**signal_batch("veh-9", n=5, start_ms=NOW_MS + 950_000), "batch_id": fresh["batch_id"]}
    later = [(b"veh-0", encode("signal_batch", reused)), messages[1],  # an earlier batch's id; a true copy
             (b"veh-9", encode("signal_batch", fresh)), (b"veh-9", encode("signal_batch", fresh_reused))]
    produce(kafka_bootstrap, topic, later)  # offsets 3..6, one sink batch
    sink.run_until_idle(idle_s=2.0, max_s=60)
    stored = sink.client.query("SELECT count(), uniqExact(vehicle_id, ts) FROM fleetstream.samples").result_rows[0]
    sink.close()
    assert (sink.stats.redelivered_skipped, sink.stats.batch_id_conflicts, sink.stats.dead_letters) == (1, 2, 2)
    assert stored == (34, 34)  # 30 of the first batches and the 4 of the first use of veh-9's id

    dlq_sink = ClickHouseSink(settings, routes={dlq: rows.DEAD_LETTERS}, subscribe_dlq=False, group_id=group,
                              serve_queries=False)
    dlq_sink.run_until_idle(idle_s=3.0, max_s=60)
    client = connect(f"chdb://{tmp_path / 'store'}")
    try:
        letters = client.query(f"SELECT source_offset, stage, error_code, sample_count, reason, original "
                               f"FROM {DATABASE}.dead_letters ORDER BY source_offset").result_rows
    finally:
        client.close()
    assert [row[:4] for row in letters] == [(3, "sink", "batch_id_conflict", 7), (6, "sink", "batch_id_conflict", 5)]
    assert f"{topic}[0]@0" in letters[0][4] and f"{topic}[0]@5" in letters[1][4]
    assert [bytes.fromhex(row[5]) for row in letters] == [later[0][1], later[3][1]]  # stored as hex
