"""The GraphQL forwarder against the contract: payloads as the public client sends them, caching, batching,
retries and dead letters, all over real HTTP to the contract-checking backend on 127.0.0.1.

Expected variables below are what `ics-wivi-analytics-ingest` 26.3.3 sent for the same README inputs
(captured against `fleetstream.sinks.graphql.contract_backend`; rebuilt from its code in
`tests/official_client.py`). The README records
here are written as the `IcsAnalytics` drop-in writes them (which keys were left out, the client's time text);
records without that information (other producers) get the fallbacks tested at the end of the README tests.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from fleetstream.config import Settings
from fleetstream.kafka import DeliveryError
from fleetstream.schemas import codec
from fleetstream.sinks.contracts import graphql_backend_sdl
from fleetstream.sinks.graphql import (
    BackendAuthError,
    Forwarder,
    GraphQLClient,
    GraphQLForwarder,
    GraphQLSinkSettings,
    RetryPolicy,
)
from fleetstream.sinks.graphql import payloads as p
from fleetstream.sinks.graphql.contract_backend import ContractBackend, start_backend

TOKEN = "s3cr3t-token-value"


@pytest.fixture
def backend() -> Iterator[ContractBackend]:
    _, server = start_backend()
    yield server
    server.stop()


def client_for(backend: ContractBackend, attempts: int = 3, sleeps: list[float] | None = None,
               token: str | None = None) -> GraphQLClient:
    from pydantic import SecretStr
    return GraphQLClient(backend.url, SecretStr(token) if token else None,
                         retry=RetryPolicy(attempts, 0.01, 0.05),
                         sleep=(sleeps.append if sleeps is not None else lambda _s: None))


def forwarder_for(backend: ContractBackend, **options: Any) -> Forwarder:
    return Forwarder(client_for(backend), GraphQLSinkSettings(**options))


def ids(device: str = "123", vehicle: str = "456", fleet: str = "789", org: str = "1011") -> dict[str, str]:
    return {"batch_id": str(uuid.uuid4()), "source": "vehicle_client", "org_id": org, "fleet_id": fleet,
            "vehicle_id": vehicle, "device_id": device}


def avro(record_type: str, record: dict[str, Any]) -> dict[str, Any]:
    """Through the real codec, so the test records are valid records with every default filled in."""
    return codec.decode(codec.encode(record_type, record), record_type)


# The README's examples as the drop-in records them (times as epoch ms: 1970-01-07T18:28:54Z = 584 934 s; the
# client's time text where it is not ISO UTC "Z" of those ms; the keys the README leaves out).
README_SIGNAL: dict[str, Any] = {**ids(), "name": "VehicleIdentificationNumber", "unit": "",
                 "message_name": "BusQuery_IDDecoding_F190_VSSAL", "network_name": "Cluster_6_TestTool",
                 "ecu_name": "", "arb_id": "", "file_id": "1234", "param_type": "TEXT", "signal_type": "DID",
                 "message_date": "2025-07-15T01:40:00.000000", "param_id": "F190", "absent_fields": ["ecuId"],
                 "samples": [{"timestamp_ms": 584_934_000, "value": 0.04, "svalue": ""}]}
README_DTC: dict[str, Any] = {**ids(), "message_name": "DTC Message99B049", "name": "DTC Message99B049",
              "network_name": "Cluster_6_TestTool", "ecu_name": "VCU_Android_GAS", "ecu_id": "14DA80F1",
              "message_date": "2025-07-15T01:42:20.385429", "file_id": "1234", "absent_fields": ["arbId"],
              "dtcs": [{"dtc_id": "B19B0-49", "description": "Head-Up Display - Internal Electronic Failure",
                        "status": "2F", "timestamp_ms": 1_752_543_735_980,
                        "time_text": "2025-07-15T01:42:15.979524", "null_fields": ["extended", "snapshot"]}]}
README_GPS: dict[str, Any] = {**ids(), "points": [{
    "timestamp_ms": 1_753_706_096_789, "latitude": 37.7749, "longitude": -122.4194, "accuracy_m": 10.5,
    "altitude_m": 120.3, "speed": 45.2, "bearing_deg": 75.0, "time_text": "2025-07-28T12:34:56.789000+00:00",
    "available": {"accuracy": True, "altitude": True, "bearing": False, "speed": True, "time": True}}]}
README_NETSTATS_CAN1: dict[str, Any] = {**ids(), "timestamp_ms": 0, "name": "CAN1", "upload_id": 1,
                        "total_messages": 1000, "matched_messages": 950, "unmatched_messages": 50, "error_messages": 0,
                        "long_message_parts": 0, "rate": 500.0}
README_NETSTATS_JACOBS: dict[str, Any] = {**ids(vehicle="9539366"), "timestamp_ms": 1_754_046_413_947, "name": "jacobs",
                          "upload_id": 4255, "total_messages": 222, "matched_messages": 139, "unmatched_messages": 0,
                          "error_messages": 27, "long_message_parts": 21, "min_time_ms": 1_754_046_413_947,
                          "max_time_ms": 1_754_046_413_947, "rate": 59.44}

# The documents exactly as the public client posts them (graphql-core's printed form).
CLIENT_DOCUMENTS = {
    "createConfiguration": "mutation createConfiguration($input: CreateConfigurationInput!) {\n  createConfiguration"
                           "(input: $input) {\n    id\n    deviceId\n    vehicleId\n    organizationId\n    fleetId\n"
                           "  }\n}",
    "createMessage": "mutation createMessage($input: CreateMessageInput!) {\n  createMessage(input: $input) {\n"
                     "    id\n    arbId\n    name\n    networkName\n    ecuId\n    ecuName\n    fileId\n  }\n}",
    "upsertSignalData": "mutation UpsertSignalData($input: UpsertSignalDataInput!) {\n  upsertSignalData(input: "
                        "$input) {\n    configurationId\n    messageId\n    messageName\n    name\n    paramType\n"
                        "    unit\n  }\n}",
    "upsertDtcData": "mutation UpsertDtcData($input: [UpsertDtcDataInput]!) {\n  upsertDtcData(input: $input) {\n"
                     "    configurationId\n    messageId\n  }\n}",
    "upsertGpsData": "mutation UpsertGpsData($input: UpsertGpsDataInput!) {\n  upsertGpsData(input: $input) {\n"
                     "    deviceId\n    fleetId\n    vehicleId\n    id\n    organizationId\n  }\n}",
    "createNetworkStats": "mutation createNetworkStats($input: CreateNetworkStatsInput!) {\n  createNetworkStats("
                          "input: $input) {\n    name\n    uploadId\n    totalMessages\n    matchedMessages\n"
                          "    unmatchedMessages\n    errorMessages\n    longMessageParts\n    minTime\n    maxTime\n"
                          "    rate\n  }\n}",
    "__type": 'query DetectCreateNetworkStatsInputType {\n  __type(name: "CreateNetworkStatsInput") {\n'
              "    inputFields {\n      name\n    }\n  }\n}",
}


def config_id(backend: ContractBackend, vehicle: int = 456) -> str:
    return backend.resolvers.configurations[(123, vehicle, 789, 1011)]


def message_id(backend: ContractBackend, name: str) -> str:
    return next(v for k, v in backend.resolvers.messages.items() if k[0] == name)


def test_documents_are_the_public_clients() -> None:
    sent = {"createConfiguration": p.CREATE_CONFIGURATION, "createMessage": p.CREATE_MESSAGE,
            "upsertSignalData": p.UPSERT_SIGNAL_DATA, "upsertDtcData": p.UPSERT_DTC_DATA,
            "upsertGpsData": p.UPSERT_GPS_DATA, "createNetworkStats": p.CREATE_NETWORK_STATS,
            "__type": p.DETECT_NETWORK_STATS_ID_FIELD}
    assert sent == CLIENT_DOCUMENTS


def test_readme_did_signal_is_sent_as_the_public_client_sends_it(backend: ContractBackend) -> None:
    failures = forwarder_for(backend).forward([("signal_batch", avro("signal_batch", README_SIGNAL))])

    assert failures == {}
    assert backend.calls("createConfiguration") == [
        {"input": {"deviceId": 123, "fleetId": 789, "organizationId": 1011, "vehicleId": 456}}]
    # ecuId is absent from the README input: null, as the client sends it; arbId was given as "": "".
    assert backend.calls("createMessage") == [{"input": {"messages": [
        {"arbId": "", "name": "BusQuery_IDDecoding_F190_VSSAL", "networkName": "Cluster_6_TestTool", "ecuName": "",
         "ecuId": None, "requestCode": None, "fileId": "1234", "messageDate": "2025-07-15T01:40:00.000000"}]}}]
    assert backend.calls("upsertSignalData") == [{"input": {"signals": [
        {"configurationId": int(config_id(backend)),
         "messageId": int(message_id(backend, "BusQuery_IDDecoding_F190_VSSAL")),
         "name": "VehicleIdentificationNumber", "unit": "", "paramType": "TEXT", "paramId": "F190",
         "signalType": "DID", "data": [{"value": 0.04, "svalue": "", "time": "1970-01-07T18:28:54Z"}]}]}}]
    assert {r.field: r.query for r in backend.requests} == {
        f: CLIENT_DOCUMENTS[f] for f in ("createConfiguration", "createMessage", "upsertSignalData")}


def test_readme_dtc_is_sent_as_the_public_client_sends_it(backend: ContractBackend) -> None:
    assert forwarder_for(backend).forward([("dtc_batch", avro("dtc_batch", README_DTC))]) == {}

    # arbId is absent from the README DTC: null, as the client sends it.
    assert backend.calls("createMessage")[0]["input"]["messages"] == [
        {"arbId": None, "name": "DTC Message99B049", "networkName": "Cluster_6_TestTool",
         "ecuName": "VCU_Android_GAS", "ecuId": "14DA80F1", "requestCode": None, "fileId": "1234",
         "messageDate": "2025-07-15T01:42:20.385429"}]
    # Configuration id as the returned string, message id as a number: the client's mix.
    # The client passes its naive microsecond input time through pydantic unchanged; so does the record's text.
    assert backend.calls("upsertDtcData") == [{"input": [
        {"fileId": "1234", "configurationId": config_id(backend),
         "messageId": int(message_id(backend, "DTC Message99B049")), "messageDate": "2025-07-15T01:42:20.385429",
         "data": [{"dtcId": "B19B0-49", "status": "2F", "description": "Head-Up Display - Internal Electronic Failure",
                   "time": "2025-07-15T01:42:15.979524", "extended": None, "snapshot": None}]}]}]


def test_dtc_extended_and_snapshot_bytes_are_bytes_inputs(backend: ContractBackend) -> None:
    record = {**README_DTC, "dtcs": [{**README_DTC["dtcs"][0], "extended": ["0A0B"], "snapshot": ["01", "02"]}]}
    assert forwarder_for(backend).forward([("dtc_batch", avro("dtc_batch", record))]) == {}
    item = backend.calls("upsertDtcData")[0]["input"][0]["data"][0]
    assert (item["extended"], item["snapshot"]) == ([{"bytes": "0A0B"}], [{"bytes": "01"}, {"bytes": "02"}])


def test_readme_gps_is_sent_as_the_public_client_sends_it(backend: ContractBackend) -> None:
    assert forwarder_for(backend).forward([("gps_batch", avro("gps_batch", README_GPS))]) == {}

    assert backend.counts["createMessage"] == 0  # GPS needs no message, as in the client
    # The client re-prints this time through pydantic ("...56.789000+00:00"); the record kept that text.
    assert backend.calls("upsertGpsData") == [{"input": {"configurationId": config_id(backend), "data": [
        {"time": "2025-07-28T12:34:56.789000+00:00", "latitude": 37.7749, "longitude": -122.4194, "accuracy": 10.5,
         "altitude": 120.3, "speed": 45.2, "bearing": 75.0,
         "available": {"accuracy": True, "altitude": True, "bearing": False, "speed": True, "time": True}}]}}]


def test_readme_network_stats_are_sent_as_the_public_client_sends_them(backend: ContractBackend) -> None:
    forwarder = forwarder_for(backend)
    batch = [("network_stats", avro("network_stats", r)) for r in (README_NETSTATS_CAN1, README_NETSTATS_JACOBS)]

    assert forwarder.forward(batch) == {}

    assert backend.counts["__type"] == 1 and forwarder.network_id_field == "configurationId"
    assert backend.calls("createNetworkStats") == [
        {"input": {"name": "CAN1", "configurationId": int(config_id(backend)), "uploadId": 1, "totalMessages": 1000,
                   "matchedMessages": 950, "unmatchedMessages": 50, "errorMessages": 0, "longMessageParts": 0,
                   "rate": 500.0}},
        {"input": {"name": "jacobs", "configurationId": int(config_id(backend, 9539366)), "uploadId": 4255,
                   "totalMessages": 222, "matchedMessages": 139, "unmatchedMessages": 0, "errorMessages": 27,
                   "longMessageParts": 21, "maxTime": "2025-08-01T11:06:53.947Z",
                   "minTime": "2025-08-01T11:06:53.947Z", "rate": 59.44}},
    ]


def test_records_without_the_clients_input_details_send_stored_strings_and_iso_z_times(
        backend: ContractBackend) -> None:
    """Other producers' records (and ones written before the client kept them) say nothing about keys left out
    or the client's time text: stored strings are sent as they are, times as ISO-8601 UTC "Z", an empty
    extended/snapshot and an empty network-stats fileId as not given."""
    bare_dtc = {**README_DTC, "dtcs": [{k: v for k, v in README_DTC["dtcs"][0].items()
                                        if k not in ("time_text", "null_fields")}]}
    del bare_dtc["absent_fields"]
    bare_gps = {**README_GPS, "points": [{k: v for k, v in README_GPS["points"][0].items() if k != "time_text"}]}
    batch = [("dtc_batch", avro("dtc_batch", bare_dtc)), ("gps_batch", avro("gps_batch", bare_gps)),
             ("network_stats", avro("network_stats", {**README_NETSTATS_JACOBS, "vehicle_id": "456"}))]

    assert forwarder_for(backend).forward(batch) == {}

    assert backend.calls("createMessage")[0]["input"]["messages"][0]["arbId"] == ""
    assert backend.calls("upsertDtcData")[0]["input"][0]["data"][0] | {"description": "-"} == {
        "dtcId": "B19B0-49", "status": "2F", "description": "-", "time": "2025-07-15T01:42:15.980Z",
        "extended": None, "snapshot": None}
    assert backend.calls("upsertGpsData")[0]["input"]["data"][0]["time"] == "2025-07-28T12:34:56.789Z"
    stats = backend.calls("createNetworkStats")[0]["input"]
    assert "fileId" not in stats and stats["maxTime"] == stats["minTime"] == "2025-08-01T11:06:53.947Z"


LEGACY_SDL = graphql_backend_sdl().replace("  configurationId: ID\n  fileId: String\n  uploadId: Int",
                                           "  vehicleId: Int\n  fileId: String\n  uploadId: Int")


def test_older_backend_gets_network_stats_keyed_by_vehicle_id_detected_once() -> None:
    assert graphql_backend_sdl() != LEGACY_SDL
    _, backend = start_backend(schema_sdl=LEGACY_SDL)
    try:
        forwarder = forwarder_for(backend)
        for record in (README_NETSTATS_CAN1, README_NETSTATS_JACOBS):
            assert forwarder.forward([("network_stats", avro("network_stats", record))]) == {}
        assert backend.counts["__type"] == 1
        assert [c["input"]["vehicleId"] for c in backend.calls("createNetworkStats")] == [456, 9539366]
        assert all("configurationId" not in c["input"] for c in backend.calls("createNetworkStats"))
    finally:
        backend.stop()


def test_older_backend_gets_the_vehicle_id_the_input_named() -> None:
    """The official client sends its input's vehicleId there (README: 9539366 from a client of vehicle 456)."""
    _, backend = start_backend(schema_sdl=LEGACY_SDL)
    try:
        record = {**README_NETSTATS_JACOBS, "vehicle_id": "456", "input_vehicle_id": 9539366}
        assert forwarder_for(backend).forward([("network_stats", avro("network_stats", record))]) == {}
        assert backend.calls("createNetworkStats")[0]["input"]["vehicleId"] == 9539366
    finally:
        backend.stop()


def test_unknown_id_field_falls_back_to_the_other_and_remembers_it() -> None:
    _, backend = start_backend(schema_sdl=LEGACY_SDL)
    try:
        forwarder = forwarder_for(backend)
        forwarder.network_id_field = "configurationId"  # as if the probe had been answered wrongly
        assert forwarder.forward([("network_stats", avro("network_stats", README_NETSTATS_CAN1))]) == {}
        assert forwarder.network_id_field == "vehicleId"
        assert backend.calls("createNetworkStats")[0]["input"]["vehicleId"] == 456
    finally:
        backend.stop()


def signal(name: str, samples: int, message: str = "EngineData", vehicle: str = "456",
           start_ms: int = 1_700_000_000_000) -> dict[str, Any]:
    return avro("signal_batch", {**ids(vehicle=vehicle), "name": name, "unit": "rpm", "message_name": message,
                                 "network_name": "CAN1", "ecu_name": "ECM", "param_type": "RAW",
                                 "samples": [{"timestamp_ms": start_ms + 10 * i, "value": float(i)}
                                             for i in range(samples)]})


def test_configuration_created_once_and_messages_only_for_new_descriptors(backend: ContractBackend) -> None:
    forwarder = forwarder_for(backend)
    first = [("signal_batch", signal("rpm", 2, "EngineData")), ("signal_batch", signal("map", 2, "EngineData")),
             ("signal_batch", signal("afr", 2, "Lambda"))]
    second = [("signal_batch", signal("rpm", 2, "EngineData")), ("signal_batch", signal("iat", 2, "Intake"))]

    assert forwarder.forward(first) == {} and forwarder.forward(second) == {}

    assert backend.counts["createConfiguration"] == 1
    sent = [[m["name"] for m in c["input"]["messages"]] for c in backend.calls("createMessage")]
    assert sent == [["EngineData", "Lambda"], ["Intake"]]  # batched, each descriptor once
    assert backend.counts["upsertSignalData"] == 2


def test_new_vehicle_gets_its_own_configuration(backend: ContractBackend) -> None:
    forwarder = forwarder_for(backend)
    forwarder.forward([("signal_batch", signal("rpm", 1, vehicle="1")), ("signal_batch", signal("rpm", 1, vehicle="2")),
                       ("signal_batch", signal("map", 1, vehicle="1"))])
    assert [c["input"]["vehicleId"] for c in backend.calls("createConfiguration")] == [1, 2]


def test_signals_are_packed_by_count_per_request(backend: ContractBackend) -> None:
    batch = [("signal_batch", signal(f"ch{i}", 1)) for i in range(5)]
    assert forwarder_for(backend, batch_size=2).forward(batch) == {}
    assert [len(c["input"]["signals"]) for c in backend.calls("upsertSignalData")] == [2, 2, 1]


def test_signals_are_packed_and_split_by_samples_per_request(backend: ContractBackend) -> None:
    batch = [("signal_batch", signal("rpm", 7)), ("signal_batch", signal("map", 2))]
    assert forwarder_for(backend, max_samples_per_request=4).forward(batch) == {}
    calls = backend.calls("upsertSignalData")
    assert [[len(s["data"]) for s in c["input"]["signals"]] for c in calls] == [[4], [3], [2]]
    rpm_times = [d["time"] for c in calls for s in c["input"]["signals"] if s["name"] == "rpm" for d in s["data"]]
    assert rpm_times == [p.iso_time(1_700_000_000_000 + 10 * i) for i in range(7)]  # order kept across requests


def test_gps_points_are_merged_per_configuration_and_chunked(backend: ContractBackend) -> None:
    records = [("gps_batch", avro("gps_batch", {**README_GPS, "points": README_GPS["points"] * 3})) for _ in range(2)]
    assert forwarder_for(backend, max_gps_points=4).forward(records) == {}
    assert [len(c["input"]["data"]) for c in backend.calls("upsertGpsData")] == [4, 2]


def test_retry_on_5xx_then_success(backend: ContractBackend) -> None:
    sleeps: list[float] = []
    client = client_for(backend, attempts=4, sleeps=sleeps)
    backend.fail_next(2, status=503)

    failures = Forwarder(client).forward([("gps_batch", avro("gps_batch", README_GPS))])

    assert failures == {}
    assert backend.counts["injected_failures"] == 2 and backend.counts["createConfiguration"] == 1
    assert client.requests == 4 and client.failures == 0  # 2 failed tries + configuration + GPS
    assert len(sleeps) == 2 and all(0 < s <= 0.05 for s in sleeps)


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    import random
    policy, rng = RetryPolicy(10, base_delay_s=1.0, max_delay_s=8.0), random.Random(7)
    delays = [policy.delay(n, rng) for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        step = min(8.0, 2.0 ** (n - 1))
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays)


def test_retry_budget_exhausted_is_a_dead_letter(backend: ContractBackend) -> None:
    client = client_for(backend, attempts=3)
    backend.fail_next(100, status=502)
    failures = Forwarder(client).forward([("gps_batch", avro("gps_batch", README_GPS))])
    assert failures[0].code == "unavailable" and failures[0].attempts == 3
    assert "HTTP 502" in failures[0].reason and backend.counts["injected_failures"] == 3


def test_unreachable_backend_is_retried_then_a_dead_letter() -> None:
    sleeps: list[float] = []
    client = GraphQLClient("http://127.0.0.1:9/graphql", retry=RetryPolicy(3, 0.01, 0.02), sleep=sleeps.append)
    failures = Forwarder(client).forward([("gps_batch", avro("gps_batch", README_GPS))])
    assert failures[0].code == "unavailable" and "ConnectError" in failures[0].reason and len(sleeps) == 2


def test_validation_error_is_a_dead_letter_with_the_backends_message_and_no_retry() -> None:
    drifted = graphql_backend_sdl().replace("input SignalInput {\n", "input SignalInput {\n  source: String!\n")
    _, backend = start_backend(schema_sdl=drifted)
    try:
        client = client_for(backend, attempts=5)
        batch = [("signal_batch", signal("rpm", 2)), ("gps_batch", avro("gps_batch", README_GPS))]
        failures = Forwarder(client).forward(batch)

        assert set(failures) == {0}  # the GPS record still went through
        assert failures[0].code == "rejected" and failures[0].attempts == 1
        assert "Expected value of type 'SignalInput' to include required field 'source'" in failures[0].reason
        assert len(backend.rejections) == 1 and client.requests == 4  # config, message, signals once, GPS
    finally:
        backend.stop()


def test_non_integer_id_is_a_dead_letter_with_a_clear_reason(backend: ContractBackend) -> None:
    batch = [("signal_batch", signal("rpm", 1, vehicle="WVWZZZ1JZXW000001")), ("signal_batch", signal("rpm", 1)),
             ("signal_batch", signal("rpm", 1, vehicle="4294967296"))]
    failures = forwarder_for(backend).forward(batch)
    assert set(failures) == {0, 2} and {f.code for f in failures.values()} == {"invalid_id"}
    assert "vehicle_id 'WVWZZZ1JZXW000001' is not an integer" in failures[0].reason
    assert "32-bit" in failures[2].reason
    assert backend.counts["createConfiguration"] == 1 and backend.counts["rejected"] == 0


def test_non_finite_value_and_unknown_signal_type_are_dead_letters(backend: ContractBackend) -> None:
    nan = signal("rpm", 2)
    nan["samples"][1]["value"] = float("nan")
    bad_type = {**signal("map", 1), "signal_type": "CAN"}
    failures = forwarder_for(backend).forward([("signal_batch", nan), ("signal_batch", bad_type),
                                                ("signal_batch", signal("afr", 1))])
    assert (failures[0].code, failures[1].code, set(failures)) == ("nan", "invalid_record", {0, 1})
    assert [s["name"] for s in backend.calls("upsertSignalData")[0]["input"]["signals"]] == ["afr"]


def test_forgotten_configuration_is_resolved_again(backend: ContractBackend) -> None:
    forwarder = forwarder_for(backend)
    forwarder.forward([("gps_batch", avro("gps_batch", README_GPS))])
    backend.resolvers.configurations.clear()  # the backend lost its data
    assert set(forwarder.forward([("gps_batch", avro("gps_batch", README_GPS))])) == {0}
    assert forwarder.forward([("gps_batch", avro("gps_batch", README_GPS))]) == {}
    assert backend.counts["createConfiguration"] == 2


def test_token_is_sent_as_bearer_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, backend = start_backend(token=TOKEN)
    try:
        client = client_for(backend, token=TOKEN)
        backend.fail_next(1)
        batch = [("gps_batch", avro("gps_batch", README_GPS)), ("signal_batch", {**signal("x", 1), "vehicle_id": "x"})]
        Forwarder(client).forward(batch)
        assert {r.authorization for r in backend.requests} == {f"Bearer {TOKEN}"}
        assert backend.counts["upsertGpsData"] == 1
        assert caplog.records and TOKEN not in caplog.text
    finally:
        backend.stop()


def test_wrong_token_is_fatal_not_a_dead_letter() -> None:
    _, backend = start_backend(token=TOKEN)
    try:
        with pytest.raises(BackendAuthError) as raised:
            Forwarder(client_for(backend, token="wrong")).forward([("gps_batch", avro("gps_batch", README_GPS))])
        assert TOKEN not in str(raised.value) and "wrong" not in str(raised.value)
        assert backend.counts["unauthorized"] == 1
    finally:
        backend.stop()


@pytest.mark.parametrize(("label", "expected"), [
    ("RawValue", "RAW"), ("State Encoded", "ENCODED"), ("NUMBER", "RAW"), ("string", "STRING"), ("TEXT", "TEXT"),
    ("Enum", "TEXT"), ("raw", "TEXT"), ("", None), (None, None), ("RAW", "RAW"), ("ENCODED", "ENCODED"),
    ("STRING", "STRING"),
])
def test_param_type_is_normalised_as_the_client_does(label: str | None, expected: str | None) -> None:
    assert p.normalise_param_type(label) == expected


@given(st.text(max_size=20))
def test_param_type_normalisation_is_idempotent_and_in_the_enum(label: str) -> None:
    once = p.normalise_param_type(label)
    assert once is None or once in {"ENCODED", "RAW", "TEXT", "STRING"}
    assert p.normalise_param_type(once) == once


@pytest.mark.parametrize(("ms", "text"), [
    (584_934_000, "1970-01-07T18:28:54Z"), (1_754_046_413_947, "2025-08-01T11:06:53.947Z"),
    (1_753_706_096_789, "2025-07-28T12:34:56.789Z"), (1_700_000_000_005, "2023-11-14T22:13:20.005Z"),
    (0, "1970-01-01T00:00:00Z"),
])
def test_times_are_iso_utc_with_z(ms: int, text: str) -> None:
    assert p.iso_time(ms) == text


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_iso_time_round_trips_milliseconds(ms: int) -> None:
    from datetime import datetime
    assert round(datetime.fromisoformat(p.iso_time(ms)).timestamp() * 1000) == ms


# --- the Kafka shell, with fake consumer and producer and the real local backend ---------------------------

class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes, key: bytes | None = b"456") -> None:
        self._t, self._p, self._o, self._v, self._k = topic, partition, offset, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes:
        return self._v


class FakeConsumer:
    def __init__(self, events: list[tuple[str, Any]], polls: list[list[FakeMessage]]) -> None:
        self.events, self.polls, self.on_revoke = events, polls, None
        self.commits: list[tuple[str, int, int]] = []
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.topics, self.on_revoke = topics, on_revoke

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        return self.polls.pop(0) if self.polls else []

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        assert asynchronous is False
        for tp in offsets:
            self.commits.append((tp.topic, tp.partition, tp.offset))
            self.events.append(("commit", (tp.topic, tp.partition, tp.offset)))

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Records dead letters; `flush` answers every delivery callback (acknowledged, or `fail_with`)."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events
        self.produced: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self.fail_with: KafkaError | None = None
        self._callbacks: list[tuple[Any, FakeMessage]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        self.produced.append((topic, key, codec.decode(value, "dead_letter")))
        self.events.append(("produce", topic))
        if on_delivery is not None:
            self._callbacks.append((on_delivery, FakeMessage(topic, 0, len(self.produced) - 1, value, key)))

    def flush(self, timeout: float = 0) -> int:
        self.events.append(("flush", None))
        callbacks, self._callbacks = self._callbacks, []
        for callback, message in callbacks:
            callback(self.fail_with, message)
        return 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shell(backend: ContractBackend, polls: list[list[FakeMessage]], clock: Clock | None = None,
          **options: Any) -> tuple[GraphQLForwarder, FakeConsumer, FakeProducer, list[tuple[str, Any]]]:
    events: list[tuple[str, Any]] = []
    consumer, producer = FakeConsumer(events, polls), FakeProducer(events)
    forwarder = GraphQLForwarder(Settings(graphql_endpoint=backend.url), GraphQLSinkSettings(**options),
                                 consumer=consumer, producer=producer, client=client_for(backend),
                                 clock=clock or Clock(), now_ms=lambda: 42)
    return forwarder, consumer, producer, events


SIGNALS = "telemetry.signals.valid"


def test_offsets_are_committed_per_partition_after_the_backend_accepted(backend: ContractBackend) -> None:
    poll = [FakeMessage(SIGNALS, 0, 10, codec.encode("signal_batch", signal("rpm", 3))),
            FakeMessage(SIGNALS, 1, 5, codec.encode("signal_batch", signal("map", 3, vehicle="2"))),
            FakeMessage(SIGNALS, 0, 11, codec.encode("signal_batch", signal("afr", 3)))]
    forwarder, consumer, _, _ = shell(backend, [poll], batch_size=2)

    forwarder.step()  # partition 0 is full (2 records); partition 1 waits for more or for time
    assert consumer.commits == [(SIGNALS, 0, 12)]
    assert [s["name"] for c in backend.calls("upsertSignalData") for s in c["input"]["signals"]] == ["rpm", "afr"]
    forwarder.flush()
    assert consumer.commits == [(SIGNALS, 0, 12), (SIGNALS, 1, 6)]
    assert forwarder.stats.records_forwarded == 3 and forwarder.stats.dead_letters == 0


def test_batches_wait_for_the_interval_unless_full(backend: ContractBackend) -> None:
    clock = Clock()
    message = FakeMessage(SIGNALS, 0, 0, codec.encode("signal_batch", signal("rpm", 3)))
    forwarder, consumer, _, _ = shell(backend, [[message], [], []], clock, batch_interval_seconds=1.0)
    forwarder.step()
    clock.now = 0.9
    forwarder.step()
    assert consumer.commits == [] and backend.counts["upsertSignalData"] == 0
    clock.now = 1.0
    forwarder.step()
    assert consumer.commits == [(SIGNALS, 0, 1)] and backend.counts["upsertSignalData"] == 1


def test_batch_flushes_when_samples_reach_the_limit(backend: ContractBackend) -> None:
    poll = [FakeMessage(SIGNALS, 0, 0, codec.encode("signal_batch", signal("rpm", 6)))]
    forwarder, consumer, _, _ = shell(backend, [poll], max_samples_per_request=5)
    forwarder.step()
    assert consumer.commits == [(SIGNALS, 0, 1)] and backend.counts["upsertSignalData"] == 2


def test_dead_letters_are_durable_before_the_commit(backend: ContractBackend) -> None:
    bad_id = codec.encode("signal_batch", {**signal("rpm", 4), "vehicle_id": "VIN-1"})
    poll = [FakeMessage(SIGNALS, 3, 7, b"not avro"), FakeMessage(SIGNALS, 3, 8, bad_id),
            FakeMessage(SIGNALS, 3, 9, codec.encode("signal_batch", signal("map", 2)))]
    forwarder, _, producer, events = shell(backend, [poll])
    forwarder.step()
    forwarder.flush()

    letters = [(topic, letter["offset"], letter["error_code"]) for topic, _, letter in producer.produced]
    assert letters == [("dlq." + SIGNALS, 7, "malformed"), ("dlq." + SIGNALS, 8, "invalid_id")]
    letter = producer.produced[1][2]
    assert (letter["stage"], letter["original"], letter["sample_count"]) == ("forward", bad_id, 4)
    assert letter["partition"] == 3
    assert letter["source_topic"] == SIGNALS and letter["first_seen_ms"] == 42 and "VIN-1" in letter["reason"]
    assert events[-2:] == [("flush", None), ("commit", (SIGNALS, 3, 10))]
    assert forwarder.stats.dead_letters == 2 and forwarder.stats.records_forwarded == 1


def test_unacknowledged_dead_letters_leave_the_offsets_uncommitted(backend: ContractBackend) -> None:
    poll = [FakeMessage(SIGNALS, 3, 7, b"not avro"),
            FakeMessage(SIGNALS, 3, 8, codec.encode("signal_batch", signal("map", 2)))]
    forwarder, consumer, producer, _ = shell(backend, [poll])
    producer.fail_with = KafkaError(KafkaError._MSG_TIMED_OUT)
    forwarder.step()
    with pytest.raises(DeliveryError, match=r"^1 of 1 messages were not acknowledged") as raised:
        forwarder.flush()
    assert raised.value.hint == "Local: Message timed out: 1"
    assert consumer.commits == [] and forwarder.stats.dead_letters == 0


def test_rejected_batch_is_dead_lettered_with_the_backend_message() -> None:
    drifted = graphql_backend_sdl().replace("input GpsPointInput {\n", "input GpsPointInput {\n  fix: Int!\n")
    _, backend = start_backend(schema_sdl=drifted)
    try:
        poll = [FakeMessage("telemetry.gps.valid", 0, 0, codec.encode("gps_batch", README_GPS))]
        forwarder, consumer, producer, _ = shell(backend, [poll])
        forwarder.step()
        forwarder.flush()
        (_, _, letter), = producer.produced
        assert letter["error_code"] == "rejected" and "required field 'fix'" in letter["reason"]
        assert consumer.commits == [("telemetry.gps.valid", 0, 1)]
    finally:
        backend.stop()


def test_auth_failure_commits_nothing_and_dead_letters_nothing() -> None:
    _, backend = start_backend(token=TOKEN)
    try:
        poll = [FakeMessage(SIGNALS, 0, 0, codec.encode("signal_batch", signal("rpm", 1)))]
        forwarder, consumer, producer, _ = shell(backend, [poll])
        forwarder.step()
        with pytest.raises(BackendAuthError):
            forwarder.flush()
        assert consumer.commits == [] and producer.produced == []
    finally:
        backend.stop()


def test_revoked_partition_buffer_is_left_to_its_next_owner(backend: ContractBackend) -> None:
    from confluent_kafka import TopicPartition
    poll = [FakeMessage(SIGNALS, 0, 0, codec.encode("signal_batch", signal("rpm", 1))),
            FakeMessage(SIGNALS, 1, 0, codec.encode("signal_batch", signal("map", 1)))]
    forwarder, consumer, _, _ = shell(backend, [poll])
    forwarder.step()
    consumer.on_revoke(consumer, [TopicPartition(SIGNALS, 0)])  # type: ignore[misc]
    forwarder.flush()
    assert consumer.commits == [(SIGNALS, 1, 1)]


def test_run_stops_on_the_event_forwards_what_is_buffered_and_closes(backend: ContractBackend) -> None:
    poll = [FakeMessage("telemetry.netstats.valid", 0, 0, codec.encode("network_stats", README_NETSTATS_CAN1))]
    forwarder, consumer, _, _ = shell(backend, [poll], batch_interval_seconds=60)
    stop = threading.Event()

    def consume_once_then_stop(num_messages: int, timeout: float) -> list[FakeMessage]:
        if stop.is_set():
            return []
        stop.set()
        return poll

    consumer.consume = consume_once_then_stop  # type: ignore[method-assign]
    stats = forwarder.run(stop)
    assert consumer.closed and consumer.commits == [("telemetry.netstats.valid", 0, 1)]
    assert stats.records_forwarded == 1 and stats.requests == 3  # configuration, probe, network stats
    assert consumer.topics == list(GraphQLSinkSettings().topics)


# --- integration: the session's real broker ------------------------------------------------------------------

@pytest.mark.integration
def test_forwarder_on_a_real_broker_delivers_every_record_to_the_backend(kafka_bootstrap: str) -> None:
    """Produce to the .valid topics, forward into the local backend, check what it recorded."""
    from confluent_kafka import Producer
    from pydantic import SecretStr

    from fleetstream.admin import create_topics
    from fleetstream.config import load_settings

    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    create_topics(settings.kafka, settings.topics)
    _, backend = start_backend(token=TOKEN)
    device = str(uuid.uuid4().int % 1_000_000_000)  # a device id no other run uses
    records = [("telemetry.signals.valid", "signal_batch", {**signal("rpm", 5), "device_id": device}),
               ("telemetry.dtcs.valid", "dtc_batch", {**README_DTC, "device_id": device}),
               ("telemetry.gps.valid", "gps_batch", {**README_GPS, "device_id": device}),
               ("telemetry.netstats.valid", "network_stats", {**README_NETSTATS_CAN1, "device_id": device}),
               ("telemetry.signals.valid", "signal_batch", {**signal("rpm", 1), "device_id": f"{device}-x"})]
    try:
        producer = Producer(settings.kafka.producer())
        for topic, record_type, record in records:
            producer.produce(topic, codec.encode(record_type, record), key=b"456")
        assert producer.flush(30) == 0
        sink_settings = settings.model_copy(update={"graphql_endpoint": backend.url,
                                                    "sec_auth_token": SecretStr(TOKEN)})
        forwarder = GraphQLForwarder(sink_settings, GraphQLSinkSettings(group_id=f"it-{uuid.uuid4()}"))
        key = (int(device), 456, 789, 1011)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                key in backend.resolvers.configurations and backend.counts["createNetworkStats"]
                and forwarder.stats.dead_letters):
            forwarder.step()
        forwarder.flush()
        forwarder.close()

        config = backend.resolvers.configurations[key]
        mine = [c for c in backend.calls("createConfiguration") if c["input"]["deviceId"] == int(device)]
        signals = [s for c in backend.calls("upsertSignalData") for s in c["input"]["signals"]
                   if str(s["configurationId"]) == config]
        assert len(mine) == 1 and sum(len(s["data"]) for s in signals) == 5
        assert any(d["configurationId"] == config for c in backend.calls("upsertDtcData") for d in c["input"])
        assert any(c["input"]["configurationId"] == config for c in backend.calls("upsertGpsData"))
        assert any(str(c["input"]["configurationId"]) == config for c in backend.calls("createNetworkStats"))
        assert forwarder.stats.dead_letters >= 1  # the non-integer device id
    finally:
        backend.stop()
