"""The IcsAnalytics drop-in: the public client's inputs and validation, and durable adds."""

from __future__ import annotations

import pytest

from producers.spool import Spool
from producers.vehicle_client import IcsAnalytics, normalize_param_type, parse_time_ms
from schemas import codec

# The examples of the public client's README (shared/seeds/000_0d2b86ae41defc7a.txt).
README_SIGNAL = {
    "name": "VehicleIdentificationNumber", "unit": "", "messageName": "BusQuery_IDDecoding_F190_VSSAL",
    "networkName": "Cluster_6_TestTool", "ecuName": "", "arbId": "", "fileId": "1234", "paramType": "TEXT",
    "signalType": "DID", "messageDate": "2025-07-15T01:40:00.000000", "paramId": "F190",
    "data": [{"value": 0.04, "time": "1970-01-07T18:28:54Z", "svalue": ""}],
}
README_DTC = {
    "messageName": "DTC Message99B049", "name": "DTC Message99B049", "networkName": "Cluster_6_TestTool",
    "ecuName": "VCU_Android_GAS", "ecuId": "14DA80F1", "messageDate": "2025-07-15T01:42:20.385429", "fileId": "1234",
    "data": [{"dtcId": "B19B0-49", "description": "Head-Up Display - Internal Electronic Failure", "status": "2F",
              "time": "2025-07-15T01:42:15.979524"}],
}
README_GPS = {
    "time": "2025-07-28T12:34:56.789Z", "latitude": 37.7749, "longitude": -122.4194, "accuracy": 10.5,
    "altitude": 120.3, "speed": 45.2, "bearing": 75.0,
    "available": {"accuracy": True, "altitude": True, "bearing": False, "speed": True, "time": True},
}
README_NETSTATS = {
    "name": "jacobs", "vehicleId": 9539366, "uploadId": 4255, "totalMessages": 222, "matchedMessages": 139,
    "unmatchedMessages": 0, "errorMessages": 27, "longMessageParts": 21, "maxTime": "2025-08-01T11:06:53.947Z",
    "minTime": "2025-08-01T11:06:53.947Z", "rate": 59.44,
}


@pytest.fixture
def client(tmp_path):
    # No broker: the publisher thread cannot deliver, which is fine, adds only need the spool.
    c = IcsAnalytics(device_id=123, vehicle_id=456, fleet_id=789, org_id=1011, batch_size=2,
                     batch_interval_seconds=3600, max_signal_count=100, bootstrap_servers="127.0.0.1:1",
                     spool_dir=tmp_path / "spool")
    yield c
    c._stop.set()
    c._spool.close()


def spooled(client: IcsAnalytics) -> list[tuple[str, dict]]:
    client._spool.close()
    reopened = Spool(client._spool.dir)
    out: list[tuple[str, dict]] = []

    def take(entries):
        out.extend((e.topic, codec.decode(e.value)) for e in entries)
        return [True] * len(entries)

    reopened.drain_once(take)
    reopened.close()
    client._spool = Spool(client._spool.dir)
    return out


@pytest.mark.parametrize(("given", "expected"), [
    ("RawValue", "RAW"), ("State Encoded", "ENCODED"), ("NUMBER", "RAW"), ("string", "STRING"),
    ("TEXT", "TEXT"), ("anything", "TEXT"), ("", ""), (None, ""),
])
def test_param_type_is_normalised_like_the_public_client(given, expected):
    assert normalize_param_type(given) == expected


@pytest.mark.parametrize(("given", "expected_ms"), [
    ("1970-01-07T18:28:54Z", 584_934_000),
    ("2025-07-28T12:34:56.789Z", 1_753_706_096_789),
    ("2025-07-15T01:42:15.979524", 1_752_543_735_980),  # no zone: UTC, as the backend reads it
    (1_753_706_096.789, 1_753_706_096_789),  # epoch seconds, as the public client converts numbers
])
def test_times_are_parsed_to_epoch_ms(given, expected_ms):
    assert parse_time_ms(given, "t") == expected_ms


def test_readme_examples_are_spooled_as_records(client):
    client.add_signal(README_SIGNAL)
    client.add_dtc(README_DTC)
    client.add_gps(README_GPS)
    client.add_network_stats(README_NETSTATS)
    records = dict(spooled(client))
    signal = records["telemetry.signals"]
    assert (signal["vehicle_id"], signal["device_id"], signal["fleet_id"], signal["org_id"]) == ("456", "123", "789",
                                                                                                "1011")
    assert signal["signal_type"] == "DID" and signal["param_type"] == "TEXT" and signal["param_id"] == "F190"
    assert signal["samples"] == [{"timestamp_ms": 584_934_000, "value": 0.04, "svalue": "", "flags": 0}]
    dtc = records["telemetry.dtcs"]["dtcs"][0]
    assert dtc["dtc_id"] == "B19B0-49" and dtc["status"] == "2F"
    assert records["telemetry.gps"]["points"][0]["available"]["bearing"] is False
    stats = records["telemetry.netstats"]
    assert stats["total_messages"] == 222 and stats["upload_id"] == 4255 and stats["max_time_ms"] == 1_754_046_413_947


def test_a_long_signal_is_split_into_messages_of_batch_size_samples(client):
    data = [{"value": float(i), "time": 1_753_706_096 + i} for i in range(5)]
    client.add_signal({"name": "EngineSpeed", "unit": "rpm", "data": data})
    sizes = [len(r["samples"]) for _, r in spooled(client)]
    assert sizes == [2, 2, 1]


def test_gps_accepts_a_list(client):
    client.add_gps([README_GPS, {**README_GPS, "time": "2025-07-28T12:34:57Z"}])
    assert sum(len(r["points"]) for _, r in spooled(client)) == 2


@pytest.mark.parametrize(("method", "payload", "message"), [
    ("add_signal", None, "'signal' should be a dict"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": 1}]}, "missing required 'time'"),
    ("add_signal", {"name": "x", "unit": "", "signalType": "CAN", "data": []}, "invalid signalType 'CAN'"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": "abc", "time": 1}]}, "'abc' is not a number"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": 1, "time": "yesterday"}]}, "not ISO-8601"),
    ("add_dtc", {"name": "d", "data": [{"dtcId": "P0301"}]}, "missing required status, description, time"),
    ("add_gps", None, "Missing GPS data"),
    ("add_gps", {"latitude": 1.0}, "missing required 'time'"),
    ("add_network_stats", {"name": "CAN1"}, "missing required totalMessages"),
])
def test_bad_input_raises_a_clear_error_and_stores_nothing(client, method, payload, message):
    with pytest.raises(ValueError, match=message):
        getattr(client, method)(payload)
    assert spooled(client) == []


def test_required_ids_are_checked(tmp_path):
    with pytest.raises(ValueError, match="vehicle_id is required"):
        IcsAnalytics(device_id=1, vehicle_id=None, fleet_id=1, org_id=1, spool_dir=tmp_path)  # type: ignore[arg-type]
