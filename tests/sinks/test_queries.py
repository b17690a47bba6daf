"""The query pack on a seeded store (hand-checked numbers), output formats, and the read-only query endpoint."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import Settings, load_settings
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.sinks.clickhouse.queries import (
    QueryParameterError,
    UnknownQuery,
    list_queries,
    load_query,
    render,
    run_query,
    run_sql,
)
from fleetstream.sinks.clickhouse.rows import SourcedRecord
from fleetstream.store import query_server
from fleetstream.store.client import DATABASE, Client, connect
from fleetstream.store.query_server import QueryError, QueryServer, check_read_only, discover, execute_read_only

H = (int(time.time()) // 3600 - 2) * 3600 * 1000  # two hours ago, on the hour
HOUR = 3_600_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def signal(vehicle: str, name: str, start_ms: int, values: list[float]) -> dict[str, Any]:
    return {"batch_id": "b", "source": "sim", "org_id": "org", "fleet_id": "fleet", "vehicle_id": vehicle,
            "device_id": "d", "name": name, "unit": "rpm",
            "samples": [{"timestamp_ms": start_ms + i * 100, "value": v, "svalue": None, "flags": i % 2}
                        for i, v in enumerate(values)]}


def insert(client: Client, table: str, columns: rows.Columns, token: str) -> None:
    client.insert(f"{DATABASE}.{table}", list(columns.values()), column_names=list(columns), column_oriented=True,
                  settings={"insert_deduplication_token": token})


def insert_samples(client: Client, record_type: str, value: dict[str, Any], token: str, late_ms: int = 1000) -> None:
    columns = rows.to_columns(record_type, [SourcedRecord(value, "topic", 0, hash(token) % 1000)])
    columns["ingested_at"] = [ts + late_ms for ts in columns["ts"]]
    insert(client, "samples", columns, token)


def seed(client: Client) -> None:
    """Four vehicles/stations, a duplicate batch, a late sample, two alert episodes, three dead letters."""
    insert_samples(client, "signal_batch", signal("veh-1", "EngineSpeed", H, [1000, 1001, 1002]), "a")
    insert_samples(client, "signal_batch", signal("veh-1", "Speed", H + HOUR, [1000]), "b", late_ms=600_000)
    insert_samples(client, "signal_batch", signal("veh-2", "EngineSpeed", H + 60_000, [1000, 1001]), "c")
    insert_samples(client, "signal_batch", signal("veh-2", "EngineSpeed", H + 60_000, [1000, 1001]), "c-again")
    dyno = {"batch_id": "d", "source": "jetdrive", "station_id": "cell-1", "provider": "JD", "run_id": "run-7",
            "channel": "power", "unit": "hp", "sensor_state": "ok",
            "samples": [{"timestamp_ms": H + 5000, "value": 100.0, "flags": 0},
                        {"timestamp_ms": H + 7500, "value": 200.0, "flags": 0}]}
    insert_samples(client, "dyno_sample_batch", dyno, "d")

    def alert(alert_id: str, event: str, started: int, ended: int | None, value: float) -> SourcedRecord:
        return SourcedRecord({"alert_id": alert_id, "event": event, "kind": "threshold", "rule_id": "rpm-high",
                              "key": "veh-1", "channel": "engine_speed", "severity": "warning", "comparator": ">",
                              "threshold": 6000.0, "value": value, "started_ms": started, "ended_ms": ended,
                              "message": ""}, "alerts", 0, 0)

    insert(client, "alerts", rows.to_columns("alert", [
        alert("a1", "fired", H, None, 6500.0), alert("a1", "resolved", H, H + 30_000, 6100.0),
        alert("a2", "fired", H + 1000, None, 6200.0)]), "alerts")

    def dead(topic: str, offset: int, code: str, samples: int) -> SourcedRecord:
        return SourcedRecord({"source_topic": topic, "partition": 0, "offset": offset, "key": b"veh-1",
                              "original": b"x", "stage": "validate", "error_code": code, "reason": "r",
                              "sample_count": samples, "first_seen_ms": H, "attempt": 1}, f"dlq.{topic}", 0, offset)

    insert(client, "dead_letters", rows.to_columns("dead_letter", [dead("telemetry.signals", 4, "out_of_range", 4),
                                                                    dead("telemetry.gps", 9, "nan", 2)]), "dl-1")
    # the same dead letter re-sent by an at-least-once stage after a restart: counted once
    insert(client, "dead_letters", rows.to_columns("dead_letter", [dead("telemetry.signals", 4, "out_of_range", 4)]),
           "dl-2")


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings of a seeded embedded store that no client holds open (queries open it themselves)."""
    store = tmp_path / "clickhouse"
    client = connect(f"chdb://{store}")
    migrate(client)
    seed(client)
    client.close()
    yield load_settings(home=tmp_path, clickhouse={"dsn": f"chdb://{store}", "query_port": 0})


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[Settings, Client, QueryServer]]:
    """The seeded store held by this process, as a running sink holds it, with its endpoint."""
    client = connect(settings.clickhouse_dsn)
    server = QueryServer(client, settings)
    server.start()
    yield settings, client, server
    server.stop()
    client.close()


# the pack


def test_pack_lists_every_query_with_description_and_parameters() -> None:
    queries = {q.name: q for q in list_queries()}
    assert {"samples_per_vehicle_channel", "fleet_summary", "vehicle_timeline", "channel_stats", "alerts",
            "dyno_runs", "data_quality"} <= set(queries)
    assert all(q.description for q in queries.values())
    assert queries["samples_per_vehicle_channel"].parameters == {
        "from": "DateTime64(3)", "to": "DateTime64(3)", "vehicle": "String"}


def test_missing_and_unknown_parameters_are_errors() -> None:
    with pytest.raises(ValueError, match="needs --vehicle"):
        load_query("vehicle_timeline").bind({})
    with pytest.raises(ValueError, match="no parameter colour"):
        load_query("alerts").bind({"colour": "red"})
    with pytest.raises(UnknownQuery, match="no query named 'nope'") as unknown:
        load_query("nope")
    assert isinstance(unknown.value, KeyError)
    assert "known: alerts" in unknown.value.hint


def test_samples_per_vehicle_channel(settings: Settings) -> None:
    columns, result = run_query(settings, "samples_per_vehicle_channel", {})
    assert columns[:4] == ["vehicle_id", "channel", "unit", "samples"]
    assert [r[:4] for r in result] == [["cell-1", "power", "hp", 2], ["veh-1", "EngineSpeed", "rpm", 3],
                                       ["veh-1", "Speed", "rpm", 1], ["veh-2", "EngineSpeed", "rpm", 4]]
    _, one = run_query(settings, "samples_per_vehicle_channel",
                       {"vehicle": "veh-1", "from": iso(H), "to": iso(H + HOUR)})
    assert [(r[1], r[3], r[4], r[5]) for r in one] == [("EngineSpeed", 3, iso(H), iso(H + 200))]


def test_fleet_summary(settings: Settings) -> None:
    columns, result = run_query(settings, "fleet_summary", {})
    table = [dict(zip(columns, r, strict=True)) for r in result]
    fleet = next(r for r in table if r["fleet_id"] == "fleet")
    assert (fleet["vehicles"], fleet["channels"], fleet["samples"], fleet["vehicle_hours"]) == (2, 2, 8, 3)
    assert (fleet["first_hour"], fleet["last_hour"]) == (iso(H), iso(H + HOUR))


def test_vehicle_timeline(settings: Settings) -> None:
    _, result = run_query(settings, "vehicle_timeline", {"vehicle": "veh-1"})
    assert [r[1:] for r in result] == [["EngineSpeed", "rpm", 3, 1000.0, 1002.0, 1001.0],
                                       ["Speed", "rpm", 1, 1000.0, 1000.0, 1000.0]]
    assert [r[0] for r in result] == [iso(H), iso(H + HOUR)]


def test_channel_stats(settings: Settings) -> None:
    columns, result = run_query(settings, "channel_stats", {})
    stats = {(r[0], r[1]): dict(zip(columns, r, strict=True)) for r in result}
    rpm = stats[("EngineSpeed", "rpm")]
    assert (rpm["vehicles"], rpm["samples"], rpm["min_value"], rpm["max_value"]) == (2, 7, 1000.0, 1002.0)
    assert rpm["mean_value"] == pytest.approx(7005 / 7, abs=1e-4)
    assert rpm["flagged"] == 3  # every second sample of each batch
    assert stats[("power", "hp")]["samples"] == 2


def test_alerts(settings: Settings) -> None:
    columns, result = run_query(settings, "alerts", {"vehicle": "veh-1"})
    episodes = {r[0]: dict(zip(columns, r, strict=True)) for r in result}
    assert episodes["a1"]["state"] == "resolved" and episodes["a1"]["duration_s"] == 30.0
    assert episodes["a1"]["max_value"] == 6500.0 and episodes["a1"]["resolved_at"] == iso(H + 30_000)
    assert episodes["a2"]["state"] == "open" and episodes["a2"]["resolved_at"] is None
    assert run_query(settings, "alerts", {"vehicle": "veh-9"})[1] == []


def test_dyno_runs(settings: Settings) -> None:
    columns, result = run_query(settings, "dyno_runs", {})
    assert len(result) == 1
    run = dict(zip(columns, result[0], strict=True))
    assert (run["station"], run["run_id"], run["samples"], run["peak_hp"], run["duration_s"]) == (
        "cell-1", "run-7", 2, 200.0, 2.5)
    assert run["peak_torque_ftlb"] is None


def test_dyno_runs_take_peaks_only_from_samples_in_the_unit_they_report(settings: Settings) -> None:
    # A WinPEP 8 power channel of undeclared unit is stored as the file had it, unit unknown(...): its 500
    # (perhaps kW) is no peak in hp, nor is a lambda-valued "afr" channel a mean AFR.
    client = connect(settings.clickhouse_dsn)
    for channel, unit, value in (("power", "unknown(code=4,sub=1)", 500.0), ("afr", "unknown(code=13,sub=0)", 0.9),
                                 ("afr", "AFR", 13.0)):
        insert_samples(client, "dyno_sample_batch", {
            "batch_id": f"u-{channel}-{unit}", "source": "wp8", "station_id": "cell-1", "provider": "run.wp8",
            "run_id": "run-7", "channel": channel, "unit": unit, "sensor_state": "ok",
            "samples": [{"timestamp_ms": H + 6000, "value": value, "flags": 0}]}, f"u-{channel}-{unit}")
    client.close()
    columns, result = run_query(settings, "dyno_runs", {})
    run = dict(zip(columns, result[0], strict=True))
    assert (run["peak_hp"], run["mean_afr"], run["samples"]) == (200.0, 13.0, 5)


def test_data_quality(settings: Settings) -> None:
    _, result = run_query(settings, "data_quality", {})
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in result] == [
        ("dead_letter", "telemetry.gps", "nan", 1, 2),
        ("dead_letter", "telemetry.signals", "out_of_range", 1, 4),
        ("duplicate", "samples", "same vehicle, channel and time stored more than once", 2, 2),
        ("late", "samples", "stored more than 300 s after event time", 1, 1),
    ]


# output formats


def test_render_formats() -> None:
    columns, data = ["vehicle", "samples", "mean"], [["veh-1", 3, 1001.5], ["veh-2", 12, None]]
    table = render(columns, data, "table")
    assert isinstance(table, str)
    assert table.splitlines()[0].split() == columns and table.splitlines()[-1] == "(2 rows)"
    assert render(columns, data, "csv") == "vehicle,samples,mean\nveh-1,3,1001.5\nveh-2,12,\n"
    assert json.loads(render(columns, data, "json")) == [{"vehicle": "veh-1", "samples": 3, "mean": 1001.5},
                                                        {"vehicle": "veh-2", "samples": 12, "mean": None}]
    import pyarrow.parquet as pq

    parquet = render(columns, data, "parquet")
    assert isinstance(parquet, bytes)
    assert pq.read_table(io.BytesIO(parquet)).to_pylist()[1] == {"vehicle": "veh-2", "samples": 12, "mean": None}
    with pytest.raises(ValueError, match="unknown format"):
        render(columns, data, "xml")


# read-only endpoint


def post(base: str, sql: str, parameters: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{base}/query", data=json.dumps({"sql": sql, "parameters": parameters or {}})
                                     .encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("sql", ["SELECT 1", "with 1 AS x SELECT x", "-- c\nSHOW TABLES", "DESCRIBE TABLE t",
                                 "EXPLAIN SELECT 1;"])
def test_read_statements_pass_the_guard(sql: str) -> None:
    assert check_read_only(sql)


@pytest.mark.parametrize("sql", ["INSERT INTO t VALUES (1)", "DROP TABLE t", "SET readonly = 0", "ALTER TABLE t DELETE",
                                 "SELECT 1; DROP TABLE t", "SELECT 1 INTO OUTFILE '/tmp/x'", "/* SELECT */ TRUNCATE t",
                                 ""])
def test_write_statements_fail_the_guard(sql: str) -> None:
    with pytest.raises(QueryError):
        check_read_only(sql)


def test_endpoint_answers_reads_and_refuses_writes(served: tuple[Settings, Client, QueryServer]) -> None:
    _, client, server = served
    base = f"http://127.0.0.1:{server.port}"
    status, body = post(base, f"SELECT count() AS n FROM {DATABASE}.samples WHERE vehicle_id = {{v:String}}",
                        {"v": "veh-2"})
    assert (status, body["columns"], body["rows"]) == (200, ["n"], [[4]])
    status, body = post(base, f"INSERT INTO {DATABASE}.samples (vehicle_id) VALUES ('evil')")
    assert status == 400 and "only SELECT" in body["error"]
    # passes the statement guard; ClickHouse itself refuses to lift readonly
    status, body = post(base, "WITH 1 AS x SELECT x SETTINGS readonly = 0")
    assert status == 400 and "readonly" in body["error"].lower()
    with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok", "pid": os.getpid()}
    # the owner's own client is still writable: readonly applied to those queries only
    client.insert(f"{DATABASE}.samples", [["veh-3", H]], column_names=["vehicle_id", "ts"])
    assert post(base, f"SELECT count() FROM {DATABASE}.samples WHERE vehicle_id = 'veh-3'")[1]["rows"] == [[1]]


def test_read_only_is_enforced_by_clickhouse_not_only_by_the_guard(
        served: tuple[Settings, Client, QueryServer]) -> None:
    _, client, _ = served
    sql = "SELECT * FROM file('/etc/hostname', 'LineAsString')"
    assert check_read_only(sql)
    with pytest.raises(QueryError, match="readonly"):
        execute_read_only(client, sql)


def test_discovery_file_lifecycle_and_routing(
        served: tuple[Settings, Client, QueryServer], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _, server = served
    info = json.loads(server.discovery_path.read_text())
    assert (info["port"], info["pid"]) == (server.port, os.getpid())
    store = server.discovery_path.parent
    assert discover(store) == f"http://127.0.0.1:{server.port}"

    def no_direct_open(*_a: Any, **_k: Any) -> Client:
        raise AssertionError("the store is served: query must not open it")

    monkeypatch.setattr(query_server, "connect", no_direct_open)
    assert run_query(settings, "samples_per_vehicle_channel", {"vehicle": "veh-2"})[1][0][3] == 4
    server.stop()
    assert not server.discovery_path.exists()
    assert discover(store) is None


def test_stale_discovery_file_is_ignored(settings: Settings) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    store = Path(settings.clickhouse_dsn.removeprefix("chdb://"))
    (store / "query_server.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1, "pid": int(gone.stdout)}))
    assert discover(store) is None
    assert run_query(settings, "samples_per_vehicle_channel", {"vehicle": "veh-1"})[1][0][3] == 3


# what a user types: ad-hoc SQL, times with offsets, every parameter, empty answers


def test_sql_runs_in_the_fleetstream_database(settings: Settings) -> None:
    assert run_sql(settings, "SELECT count() AS n FROM samples WHERE vehicle_id = 'veh-2'") == (["n"], [[4]])


def test_sql_through_the_endpoint_runs_in_the_fleetstream_database(
        served: tuple[Settings, Client, QueryServer]) -> None:
    settings, _, _ = served
    assert run_sql(settings, "SELECT count() AS n FROM samples WHERE vehicle_id = 'veh-2'") == (["n"], [[4]])


@pytest.mark.parametrize("sql", ["SELECT 'a--b' AS x", "SELECT 'a--b' AS x -- a comment", "SELECT /* c */ 'a--b' AS x",
                                 "SELECT 'a/*b*/--b' AS x;", "SELECT 'it''s' AS x"])
def test_comment_markers_inside_literals_are_text(settings: Settings, sql: str) -> None:
    expected = "it's" if "it''s" in sql else sql.split("'")[1]
    assert run_sql(settings, sql) == (["x"], [[expected]])


def test_semicolon_and_outfile_inside_literals_are_text() -> None:
    assert check_read_only("SELECT ';' AS x, 'INTO OUTFILE' AS y") == "SELECT ';' AS x, 'INTO OUTFILE' AS y"
    with pytest.raises(QueryError, match="one statement"):
        check_read_only("SELECT ';'; DROP TABLE t")


def test_empty_result_keeps_its_header(settings: Settings) -> None:
    columns, result = run_query(settings, "alerts", {"from": "2001-01-01", "to": "2001-01-02"})
    assert result == [] and columns[:3] == ["alert_id", "vehicle", "channel"]
    assert str(render(columns, result, "csv")).startswith("alert_id,vehicle,channel,")
    assert run_sql(settings, "SELECT 1 AS a, 'x' AS b WHERE 0") == (["a", "b"], [])


def test_empty_result_through_the_endpoint_keeps_its_header(served: tuple[Settings, Client, QueryServer]) -> None:
    settings, _, _ = served
    assert run_sql(settings, "SELECT 1 AS a, 'x' AS b WHERE 0") == (["a", "b"], [])


@pytest.mark.parametrize(("given", "bound"), [
    ("2026-11-30T10:00:00+02:00", "2026-11-30 08:00:00.000"),
    ("2026-11-30T10:00:00Z", "2026-11-30 10:00:00.000"),
    ("2026-11-30 10:00:00.250", "2026-11-30 10:00:00.250"),
    ("2026-11-30", "2026-11-30 00:00:00.000"),
    ("2026-11-30T01:00-05:00", "2026-11-30 06:00:00.000"),
])
def test_times_are_checked_locally_and_bound_as_utc(given: str, bound: str) -> None:
    assert load_query("alerts").bind({"from": given})["from"] == bound


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2026-11-31"}, "'2026-11-31' is not an ISO-8601"),
    ({"to": "yesterday"}, "'yesterday' is not an ISO-8601"),
])
def test_bad_times_never_reach_clickhouse(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryParameterError, match=message) as bad:
        load_query("alerts").bind(params)
    assert "DateTime64(3)" in bad.value.hint


def test_an_offset_selects_the_same_rows_as_its_utc_time(settings: Settings) -> None:
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(H / 1000 + 1))
    shifted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(H / 1000 + 1 + 2 * 3600)) + "+02:00"
    by_utc = run_query(settings, "alerts", {"from": utc})[1]
    assert [r[0] for r in by_utc] == ["a2"]  # a1 started at H, a2 one second later
    assert run_query(settings, "alerts", {"from": shifted})[1] == by_utc


def test_every_listed_parameter_is_accepted_and_typed(settings: Settings) -> None:
    query = load_query("data_quality")
    assert query.bind({"late_seconds": "5"})["late_seconds"] == 5
    with pytest.raises(QueryParameterError, match="'five' is not a whole number"):
        query.bind({"late_seconds": "five"})
    late = [r for r in run_query(settings, "data_quality", {"late_seconds": "0"})[1] if r[0] == "late"]
    assert late[0][3] == "stored more than 0 s after event time"
    assert late[0][5] > 1  # every sample arrived at least 1 s after its time; with the default 300 s only one
