"""Issue 4's proof for the vehicle client: the public `IcsAnalytics` README examples, unchanged but for the
import, go through the real broker, `fleetstream worker` and `fleetstream sink clickhouse`, and land in
ClickHouse field by field; and a client killed right after `add_signal` still delivers the signal.

Issue 11's: the same run's `.valid` records, forwarded to the contract-checking backend, are the official
client's requests field by field, null for null (expected payloads in `tests/official_client.py`).
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import GraphQLSinkSettings, KafkaSettings
from fleetstream.producers.vehicle_client import IcsAnalytics
from fleetstream.sinks.graphql import Forwarder, GraphQLClient
from fleetstream.sinks.graphql.contract_backend import start_backend
from fleetstream.topics import record_type_of
from tests import official_client as official
from tests.official_client import (
    README_DTC,
    README_GPS,
    README_NETSTATS_CAN1,
    README_NETSTATS_JACOBS,
    README_SIGNAL,
)
from tests.pipeline import Pipeline, TopicReader, pipeline  # noqa: F401  (pipeline is a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORG_ID, FLEET_ID = 1011, 789  # the README's


def _ms(when: datetime) -> int:
    """Epoch ms of an aware datetime, rounded to the millisecond, in integer arithmetic."""
    micros = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return (micros + 500) // 1000


def _iso_ms(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


PID_VALUES_RPM = [812.5, 2500.0, 6000.25, 16000.0]
"""EngineSpeed points; 16000 rpm is inside the hard range (≤ 20000) but above the warning limit (15000)."""
FLAG_ABOVE_WARNING = 2


def _pid_signal(start: datetime) -> dict[str, Any]:
    return {
        'name': 'EngineSpeed', 'unit': 'rpm', 'messageName': 'OBD2_Mode01_PID0C', 'networkName': 'HS_CAN',
        'ecuName': 'ECM', 'ecuId': '7E8', 'arbId': '7DF', 'fileId': '5678', 'paramType': 'NUMBER',
        'signalType': 'PID', 'messageDate': _iso_ms(start), 'paramId': '0C',
        'data': [{'value': value, 'time': _iso_ms(start + timedelta(milliseconds=250 * i)), 'svalue': ''}
                 for i, value in enumerate(PID_VALUES_RPM)],
    }


def _unique_ids() -> tuple[int, int]:
    """(device id, vehicle id) no other test uses on the shared broker."""
    rng = random.SystemRandom()
    return rng.randrange(10_000_000, 2_000_000_000), rng.randrange(10_000_000, 2_000_000_000)


@pytest.fixture(scope="module")
def readme_run(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """Drive one client with every README example plus a PID signal; what was sent and when."""
    device_id, vehicle_id = _unique_ids()
    reader = TopicReader(pipeline.settings.kafka, list(GraphQLSinkSettings().topics))
    pid_start = datetime.now(UTC).replace(microsecond=123000) - timedelta(minutes=2)
    client = IcsAnalytics(
        device_id=device_id, vehicle_id=vehicle_id, fleet_id=FLEET_ID, org_id=ORG_ID,
        graphql_endpoint="https://your-backend/graphql", batch_size=100, batch_interval_seconds=10,
        max_signal_count=100, bootstrap_servers=pipeline.bootstrap,
        spool_dir=tmp_path_factory.mktemp("vehicle-client-spool"))
    client.add_signal(copy.deepcopy(README_SIGNAL))
    client.add_signal(_pid_signal(pid_start))
    client.add_dtc(copy.deepcopy(README_DTC))
    client.add_gps(copy.deepcopy(README_GPS))
    added_from_ms = _ms(datetime.now(UTC))
    client.add_network_stats(copy.deepcopy(README_NETSTATS_CAN1))
    added_to_ms = _ms(datetime.now(UTC))
    client.add_network_stats(copy.deepcopy(README_NETSTATS_JACOBS))
    client.flush()
    client.close()
    # 2 signal batches, 1 DTC batch, 1 GPS batch, 2 network stats
    valid = reader.read_until(
        lambda records: sum(r[3]["vehicle_id"] == str(vehicle_id) for r in records) >= 6)
    reader.close()
    mine = [r for r in valid if r[3]["vehicle_id"] == str(vehicle_id)]
    return {"device_id": str(device_id), "vehicle_id": str(vehicle_id), "pid_start": pid_start,
            "netstats_added_ms": (added_from_ms, added_to_ms),
            "valid": [(r[0], r[3]) for r in mine],
            "valid_signals": [r[3] for r in mine if r[0] == "telemetry.signals.valid"]}


def _ids(run: dict[str, Any]) -> dict[str, Any]:
    return {"org_id": str(ORG_ID), "fleet_id": str(FLEET_ID), "vehicle_id": run["vehicle_id"],
            "device_id": run["device_id"], "source": "vehicle_client"}


def test_readme_signals_are_stored_sample_by_sample(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    rows = pipeline.wait_for_rows(
        "SELECT org_id, fleet_id, vehicle_id, device_id, source, channel, unit, toUnixTimestamp64Milli(ts) AS ts_ms,"
        " value, svalue, flags, run_id, provider, sensor_state, kafka_topic FROM fleetstream.samples"
        " WHERE vehicle_id = {vid:String}", {"vid": readme_run["vehicle_id"]},
        expected=1 + len(PID_VALUES_RPM))
    base = {**_ids(readme_run), "run_id": "", "provider": "", "sensor_state": "",
            "kafka_topic": "telemetry.signals.valid"}
    pid_start: datetime = readme_run["pid_start"]
    expected = [
        {**base, "channel": "EngineSpeed", "unit": "rpm", "ts_ms": _ms(pid_start + timedelta(milliseconds=250 * i)),
         "value": value, "svalue": "", "flags": FLAG_ABOVE_WARNING if value > 15000 else 0}
        for i, value in enumerate(PID_VALUES_RPM)
    ] + [
        {**base, "channel": "VehicleIdentificationNumber", "unit": "", "value": 0.04, "svalue": "", "flags": 0,
         "ts_ms": _ms(datetime(1970, 1, 7, 18, 28, 54, tzinfo=UTC))},
    ]
    assert sorted(rows, key=lambda row: (row["channel"], row["ts_ms"])) == expected


def test_readme_signal_descriptors_survive_validation(readme_run: dict[str, Any]) -> None:
    """Signal type, param type and id, message, network, ECU, arb id, file id and message date reach
    telemetry.signals.valid unchanged (the GraphQL forwarder reads them there); the README DID example's
    paramType TEXT stays TEXT, NUMBER becomes RAW (the public client's rule)."""
    by_name = {record["name"]: record for record in readme_run["valid_signals"]}
    assert len(readme_run["valid_signals"]) == 2 and set(by_name) == {"VehicleIdentificationNumber", "EngineSpeed"}
    descriptor = ("message_name", "network_name", "ecu_name", "ecu_id", "arb_id", "file_id", "message_date",
                  "param_type", "signal_type", "param_id")
    assert {k: by_name["VehicleIdentificationNumber"][k] for k in descriptor} == {
        "message_name": "BusQuery_IDDecoding_F190_VSSAL", "network_name": "Cluster_6_TestTool", "ecu_name": "",
        "ecu_id": "", "arb_id": "", "file_id": "1234", "message_date": "2025-07-15T01:40:00.000000",
        "param_type": "TEXT", "signal_type": "DID", "param_id": "F190"}
    assert {k: by_name["EngineSpeed"][k] for k in descriptor} == {
        "message_name": "OBD2_Mode01_PID0C", "network_name": "HS_CAN", "ecu_name": "ECM", "ecu_id": "7E8",
        "arb_id": "7DF", "file_id": "5678", "message_date": _iso_ms(readme_run["pid_start"]), "param_type": "RAW",
        "signal_type": "PID", "param_id": "0C"}


def test_readme_records_from_the_valid_topics_reach_the_backend_as_the_official_client_sends_them(
        readme_run: dict[str, Any]) -> None:
    """client -> Avro -> broker -> worker -> .valid -> GraphQL forwarder -> backend: the official client's
    requests field by field, null for null (the PID signal, not a README example, is left out)."""
    batch = [(record_type_of(topic), record) for topic, record in readme_run["valid"]
             if record.get("name") != "EngineSpeed"]
    assert sorted(record_type for record_type, _ in batch) == [
        "dtc_batch", "gps_batch", "network_stats", "network_stats", "signal_batch"]
    _, backend = start_backend()
    try:
        assert Forwarder(GraphQLClient(backend.url, None), GraphQLSinkSettings()).forward(batch) == {}
        ids = {"device_id": int(readme_run["device_id"]), "vehicle_id": int(readme_run["vehicle_id"]),
               "fleet_id": FLEET_ID, "org_id": ORG_ID}
        config_id = backend.resolvers.configurations[(ids["device_id"], ids["vehicle_id"], FLEET_ID, ORG_ID)]
        expected = official.expected_readme(
            ids, config_id, lambda name: next(v for k, v in backend.resolvers.messages.items() if k[0] == name))
        sent = official.sent_objects(backend.calls)
    finally:
        backend.stop()
    for objects in (expected, sent):
        objects["createMessage"].sort(key=lambda m: m["name"])
        objects["createNetworkStats"].sort(key=lambda m: m["name"])
    assert official.differences(expected, sent) == []


SIGNAL_DESCRIPTOR_COLUMNS = {"signal_type", "param_type", "param_id", "message_name", "network_name", "ecu_name",
                             "ecu_id", "arb_id", "file_id", "message_date"}


def test_samples_table_stores_signal_descriptors(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    rows = pipeline.wait_for_rows(
        "SELECT " + ", ".join(sorted(SIGNAL_DESCRIPTOR_COLUMNS)) + " FROM fleetstream.samples"
        " WHERE vehicle_id = {vid:String} AND channel = 'VehicleIdentificationNumber'",
        {"vid": readme_run["vehicle_id"]}, expected=1)
    assert rows == [{"signal_type": "DID", "param_type": "TEXT", "param_id": "F190",
                     "message_name": "BusQuery_IDDecoding_F190_VSSAL", "network_name": "Cluster_6_TestTool",
                     "ecu_name": "", "ecu_id": "", "arb_id": "", "file_id": "1234",
                     "message_date": "2025-07-15T01:40:00.000000"}]


def test_readme_dtc_is_stored_field_by_field(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    rows = pipeline.wait_for_rows(
        "SELECT org_id, fleet_id, vehicle_id, device_id, source, toUnixTimestamp64Milli(ts) AS ts_ms, dtc_id, status,"
        " description, message_name, network_name, ecu_name, ecu_id, extended, snapshot, kafka_topic"
        " FROM fleetstream.dtcs WHERE vehicle_id = {vid:String}", {"vid": readme_run["vehicle_id"]}, expected=1)
    assert rows == [{
        **_ids(readme_run), "ts_ms": _ms(datetime(2025, 7, 15, 1, 42, 15, 979524, tzinfo=UTC)),
        "dtc_id": "B19B0-49", "status": "2F", "description": "Head-Up Display - Internal Electronic Failure",
        "message_name": "DTC Message99B049", "network_name": "Cluster_6_TestTool", "ecu_name": "VCU_Android_GAS",
        "ecu_id": "14DA80F1", "extended": [], "snapshot": [], "kafka_topic": "telemetry.dtcs.valid"}]


DTC_HEADER_COLUMNS = {"name", "arb_id", "file_id", "message_date"}


def test_dtcs_table_stores_dtc_header(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    rows = pipeline.wait_for_rows(
        "SELECT " + ", ".join(sorted(DTC_HEADER_COLUMNS)) + " FROM fleetstream.dtcs WHERE vehicle_id = {vid:String}",
        {"vid": readme_run["vehicle_id"]}, expected=1)
    assert rows == [{"arb_id": "", "file_id": "1234", "message_date": "2025-07-15T01:42:20.385429",
                     "name": "DTC Message99B049"}]


def test_readme_gps_fix_is_stored_with_availability(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    rows = pipeline.wait_for_rows(
        "SELECT org_id, fleet_id, vehicle_id, device_id, source, toUnixTimestamp64Milli(ts) AS ts_ms, latitude,"
        " longitude, accuracy_m, altitude_m, speed, bearing_deg, available_mask, kafka_topic"
        " FROM fleetstream.gps_points WHERE vehicle_id = {vid:String}", {"vid": readme_run["vehicle_id"]},
        expected=1)
    # available_mask bits (005_gps_points.sql): 1 accuracy, 2 altitude, 4 bearing, 8 speed, 16 time
    assert rows == [{
        **_ids(readme_run), "ts_ms": _ms(datetime(2025, 7, 28, 12, 34, 56, 789000, tzinfo=UTC)),
        "latitude": 37.7749, "longitude": -122.4194, "accuracy_m": 10.5, "altitude_m": 120.3, "speed": 45.2,
        "bearing_deg": 75.0, "available_mask": 1 | 2 | 8 | 16, "kafka_topic": "telemetry.gps.valid"}]


def test_readme_network_stats_are_stored_field_by_field(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    rows = pipeline.wait_for_rows(
        "SELECT org_id, fleet_id, vehicle_id, device_id, source, toUnixTimestamp64Milli(ts) AS ts_ms, network,"
        " upload_id, file_id, total_messages, matched_messages, unmatched_messages, error_messages,"
        " long_message_parts, toUnixTimestamp64Milli(min_time) AS min_ms, toUnixTimestamp64Milli(max_time) AS max_ms,"
        " rate, kafka_topic FROM fleetstream.network_stats WHERE vehicle_id = {vid:String}",
        {"vid": readme_run["vehicle_id"]}, expected=2)
    assert sorted(row["network"] for row in rows) == ["CAN1", "jacobs"], rows
    can1, jacobs = sorted(rows, key=lambda row: str(row["network"]))
    added_from_ms, added_to_ms = readme_run["netstats_added_ms"]
    # without minTime/maxTime the record's event time is when it was added
    assert added_from_ms <= can1.pop("ts_ms") <= added_to_ms
    common = {**_ids(readme_run), "file_id": "", "kafka_topic": "telemetry.netstats.valid"}
    assert can1 == {**common, "network": "CAN1", "upload_id": 1, "total_messages": 1000, "matched_messages": 950,
                    "unmatched_messages": 50, "error_messages": 0, "long_message_parts": 0, "min_ms": None,
                    "max_ms": None, "rate": 500.0}
    t = _ms(datetime(2025, 8, 1, 11, 6, 53, 947000, tzinfo=UTC))
    assert jacobs == {**common, "network": "jacobs", "upload_id": 4255, "ts_ms": t, "total_messages": 222,
                      "matched_messages": 139, "unmatched_messages": 0, "error_messages": 27,
                      "long_message_parts": 21, "min_ms": t, "max_ms": t, "rate": 59.44}


def test_nothing_of_the_readme_run_was_dead_lettered(pipeline: Pipeline, readme_run: dict[str, Any]) -> None:  # noqa: F811
    """No README record was rejected on the path under test (decode, validation, sink). The analytics stage
    is left out: it sees only valid copies, and its failures say nothing about what was stored."""
    rows = pipeline.rows("SELECT source_topic, stage, error_code, reason FROM fleetstream.dead_letters"
                         " WHERE key = {vid:String} AND stage != 'analytics'", {"vid": readme_run["vehicle_id"]})
    assert rows == []


# --- durability: a client killed right after add_signal -------------------------------------------------------

_KILLED_CLIENT = textwrap.dedent("""
    import sys, time
    from fleetstream.producers.vehicle_client import IcsAnalytics

    device_id, vehicle_id, spool_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # an unreachable broker and hour-long batching: nothing can leave before the kill, only the spool has it
    client = IcsAnalytics(device_id=device_id, vehicle_id=vehicle_id, fleet_id=789, org_id=1011,
                          batch_size=10_000, batch_interval_seconds=3600, max_signal_count=10_000,
                          bootstrap_servers="127.0.0.1:1", spool_dir=spool_dir)
    client.add_signal({"name": "EngineSpeed", "unit": "rpm", "signalType": "PID", "paramType": "NUMBER",
                       "paramId": "0C", "data": [{"value": 1234.5, "time": sys.argv[4]}]})
    print("added", flush=True)
    time.sleep(3600)
""")


def test_signal_added_before_sigkill_is_delivered_after_restart(pipeline: Pipeline, tmp_path: Path) -> None:  # noqa: F811
    device_id, vehicle_id = _unique_ids()
    spool_dir = tmp_path / "spool"
    when = datetime.now(UTC).replace(microsecond=456000) - timedelta(seconds=30)
    raw = TopicReader(pipeline.settings.kafka, ["telemetry.signals"])
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, str(device_id), str(vehicle_id), str(spool_dir),
                              _iso_ms(when)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=Path(__file__).parents[1])
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"added\n", child.stderr.read() if child.stderr else line
    finally:
        child.kill()  # SIGKILL: no close, no flush, no atexit
        child.wait(10)
    assert child.returncode == -9

    restarted = IcsAnalytics(device_id=device_id, vehicle_id=vehicle_id, fleet_id=FLEET_ID, org_id=ORG_ID,
                             batch_interval_seconds=1, kafka=KafkaSettings(bootstrap_servers=pipeline.bootstrap),
                             spool_dir=spool_dir)
    restarted.close()

    mine = [r for r in raw.read_until(lambda records: any(r[3]["vehicle_id"] == str(vehicle_id) for r in records))
            if r[3]["vehicle_id"] == str(vehicle_id)]
    raw.close()
    assert [(r[0], [(s["timestamp_ms"], s["value"]) for s in r[3]["samples"]]) for r in mine] == [
        ("telemetry.signals", [(_ms(when), 1234.5)])], "the spooled signal must arrive in Kafka exactly once"
    rows = pipeline.wait_for_rows(
        "SELECT channel, unit, toUnixTimestamp64Milli(ts) AS ts_ms, value, device_id FROM fleetstream.samples"
        " WHERE vehicle_id = {vid:String}", {"vid": str(vehicle_id)}, expected=1)
    assert rows == [{"channel": "EngineSpeed", "unit": "rpm", "ts_ms": _ms(when), "value": 1234.5,
                     "device_id": str(device_id)}]
