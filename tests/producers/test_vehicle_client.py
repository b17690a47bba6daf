"""The IcsAnalytics drop-in: the official client's inputs, what its records keep of them (null for null, the time
text), refusals that name the argument, where it publishes and spools, and durable adds."""

from __future__ import annotations

import copy
import inspect
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetstream.config import KafkaSettings, Settings
from fleetstream.producers import vehicle_client
from fleetstream.producers.spool import Spool
from fleetstream.producers.vehicle_client import AsyncIcsAnalytics, IcsAnalytics, normalize_param_type, parse_time_ms
from fleetstream.schemas import codec
from fleetstream.sinks.graphql import payloads
from tests.official_client import README_DTC, README_GPS, README_NETSTATS_JACOBS, README_SIGNAL

ROOT = Path(__file__).parents[2]


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
    reopened = Spool(client.spool_dir)
    out: list[tuple[str, dict]] = []

    def take(entries):
        out.extend((e.topic, codec.decode(e.value)) for e in entries)
        return [True] * len(entries)

    reopened.drain_once(take)
    reopened.close()
    client._spool = Spool(client.spool_dir)
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
    (datetime(2025, 7, 28, 12, 34, 56, 789000, tzinfo=UTC), 1_753_706_096_789),
])
def test_times_are_parsed_to_epoch_ms(given, expected_ms):
    assert parse_time_ms(given, "t") == expected_ms


@pytest.mark.parametrize("given", [1_753_706_096_789, 1e30, float("inf"), float("nan"), True])
def test_a_number_that_is_not_epoch_seconds_is_refused(given):
    with pytest.raises(ValueError, match="t: "):
        parse_time_ms(given, "t")


def test_readme_examples_are_spooled_with_what_the_input_left_out_and_its_time_text(client):
    client.add_signal(copy.deepcopy(README_SIGNAL))
    client.add_dtc(copy.deepcopy(README_DTC))
    client.add_gps(copy.deepcopy(README_GPS))
    client.add_network_stats(copy.deepcopy(README_NETSTATS_JACOBS))
    records = dict(spooled(client))
    signal = records["telemetry.signals"]
    assert (signal["vehicle_id"], signal["device_id"], signal["fleet_id"], signal["org_id"]) == ("456", "123", "789",
                                                                                                "1011")
    assert signal["signal_type"] == "DID" and signal["param_type"] == "TEXT" and signal["param_id"] == "F190"
    # arbId was given as "", ecuId and requestCode were left out; the time is ISO UTC "Z" already (no text kept).
    assert (signal["arb_id"], signal["ecu_id"], signal["request_code"]) == ("", "", None)
    assert (signal["absent_fields"], signal["null_fields"]) == (["ecuId"], [])
    assert signal["samples"] == [{"timestamp_ms": 584_934_000, "value": 0.04, "svalue": "", "flags": 0,
                                  "time_text": None}]
    dtc = records["telemetry.dtcs"]
    assert dtc["absent_fields"] == ["arbId"] and dtc["message_name"] == "DTC Message99B049"
    assert dtc["dtcs"] == [{"dtc_id": "B19B0-49", "status": "2F",
                            "description": "Head-Up Display - Internal Electronic Failure",
                            "timestamp_ms": 1_752_543_735_980, "extended": [], "snapshot": [],
                            "time_text": "2025-07-15T01:42:15.979524", "null_fields": ["extended", "snapshot"]}]
    point = records["telemetry.gps"]["points"][0]
    assert point["available"]["bearing"] is False and point["null_fields"] == []
    assert point["time_text"] == "2025-07-28T12:34:56.789000+00:00"  # pydantic's re-print, as the client sends it
    stats = records["telemetry.netstats"]
    assert stats["total_messages"] == 222 and stats["upload_id"] == 4255 and stats["max_time_ms"] == 1_754_046_413_947
    assert stats["max_time_text"] == stats["min_time_text"] == "2025-08-01T11:06:53.947Z"
    assert stats["absent_fields"] == ["fileId"] and stats["input_vehicle_id"] == 9539366


def test_keys_given_as_none_are_told_from_keys_left_out(client):
    client.add_signal({"name": "x", "unit": "", "ecuId": None, "paramId": None, "requestCode": "22F190",
                       "data": [{"value": 1.0, "time": "2025-07-28T12:34:56Z"}]})
    client.add_dtc({"name": "d", "fileId": None, "data": [{"dtcId": "P0300", "status": "2F", "description": "",
                                                         "time": "2025-07-28T12:34:56Z", "extended": []}]})
    client.add_gps({"time": "2025-07-28T12:34:56Z", "available": {"speed": True, "time": None}})
    records = dict(spooled(client))
    signal = records["telemetry.signals"]
    assert signal["null_fields"] == ["ecuId", "paramId"] and signal["request_code"] == "22F190"
    assert set(signal["absent_fields"]) == {"networkName", "ecuName", "arbId", "fileId", "messageDate"}
    dtc = records["telemetry.dtcs"]
    assert dtc["null_fields"] == ["fileId"] and dtc["dtcs"][0]["null_fields"] == ["snapshot"]  # extended: [] given
    assert records["telemetry.gps"]["points"][0]["null_fields"] == [
        "available.accuracy", "available.altitude", "available.bearing", "available.time"]


@pytest.mark.parametrize(("point", "expected_ms", "text"), [
    ({"value": 1, "time": 1_753_706_096.789}, 1_753_706_096_789, "2025-07-28T12:34:56.789000+00:00"),
    ({"value": 1, "time": "2025-07-28 12:34:56"}, 1_753_706_096_000, "2025-07-28 12:34:56"),
    ({"value": 1, "time": "2025-07-28T12:34:56.500Z"}, 1_753_706_096_500, None),  # what the forwarder prints
    ({"value": 1, "time": "2025-07-28T12:34:56.5Z"}, 1_753_706_096_500, "2025-07-28T12:34:56.5Z"),
    ({"value": 1, "timestamp": 1_753_706_096_789}, 1_753_706_096_789, None),  # epoch ms, explicitly
])
def test_signal_times_keep_the_text_the_official_client_sends(client, point, expected_ms, text):
    client.add_signal({"name": "x", "unit": "", "data": [point]})
    sample = spooled(client)[0][1]["samples"][0]
    assert (sample["timestamp_ms"], sample["time_text"]) == (expected_ms, text)


def test_gps_numbers_follow_the_official_clients_rule_seconds_then_milliseconds(client):
    client.add_gps([{"time": 1_753_706_096.5}, {"time": 1_753_706_096_789}])
    points = spooled(client)[0][1]["points"]
    assert [p["timestamp_ms"] for p in points] == [1_753_706_096_500, 1_753_706_096_789]


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
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": "abc", "time": 1}]},
     r"data\[0\]\.value: 'abc' is not a number"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": 1, "time": "yesterday"}]}, "not ISO-8601"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": 1, "time": 1e30}]}, r"data\[0\]\.time: 1e\+30"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": 1, "time": 1_753_706_096_789}]},
     r"data\[0\]\.time: .*milliseconds"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"value": 1, "time": "2025-07-28T12:34:56Z",
                                                       "timestamp": 1_753_706_096_789}]}, "not both"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"time": "2025-07-28T12:34:56Z"}]},
     "neither 'value' nor 'svalue'"),
    ("add_signal", {"name": "x", "unit": "", "data": [{"svalue": 5, "time": 1}]}, r"data\[0\]\.svalue"),
    ("add_signal", {"name": "x", "unit": 7, "data": []}, r"\.unit: expected a string"),
    ("add_signal", {"name": "x", "unit": "", "ecuId": 0x7E8, "data": []}, r"\.ecuId: expected a string"),
    ("add_dtc", {"data": ["P0300"]}, r"dtc data\[0\]: expected a dict"),
    ("add_dtc", {"name": "d", "data": [{"dtcId": "P0301"}]}, "missing required status, description, time"),
    ("add_dtc", {"data": [{"dtcId": "P0301", "status": "2F", "description": "", "time": 1}]},
     "missing required 'messageName' or 'name'"),
    ("add_dtc", {"name": "d", "data": [{"dtcId": "P0301", "status": "2F", "description": "",
                                        "time": 1_752_543_735_979}]}, r"data\[0\]\.time: .*milliseconds"),
    ("add_gps", None, "Missing GPS data"),
    ("add_gps", {"latitude": 1.0}, "missing required 'time'"),
    ("add_gps", {"time": 1e30}, r"gps\[0\]\.time"),
    ("add_gps", {"time": "2025-07-28T12:34:56Z", "latitude": "37.7"}, r"gps\[0\]\.latitude: '37.7' is not a number"),
    ("add_gps", {"time": "2025-07-28T12:34:56Z", "available": {"speed": "yes"}}, r"available\.speed: 'yes'"),
    ("add_network_stats", {"name": "CAN1"}, "missing required totalMessages"),
    ("add_network_stats", {**README_NETSTATS_JACOBS, "totalMessages": "222"}, "totalMessages: '222' is not an integer"),
    ("add_network_stats", {**README_NETSTATS_JACOBS, "errorMessages": 2.5}, "errorMessages: 2.5 is not an integer"),
    ("add_network_stats", {**README_NETSTATS_JACOBS, "maxTime": 1_754_046_413_947}, "maxTime: expected a string"),
])
def test_bad_input_raises_a_value_error_naming_it_and_stores_nothing(client, method, payload, message):
    with pytest.raises(ValueError, match=message):
        getattr(client, method)(payload)
    assert spooled(client) == []


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("vehicle_id", None, "vehicle_id is required"),
    ("device_id", "123", "device_id must be an integer, got str '123'"),
    ("org_id", True, "org_id must be an integer"),
    ("batch_size", "100", "batch_size must be an integer >= 1, got str '100'"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("max_signal_count", 1.5, "max_signal_count must be an integer"),
    ("batch_interval_seconds", "10", "batch_interval_seconds must be a number >= 0.1"),
    ("batch_interval_seconds", float("nan"), "batch_interval_seconds must be a number"),
])
def test_wrong_constructor_arguments_are_value_errors_naming_them(tmp_path, argument, value, message):
    arguments: dict[str, Any] = {"device_id": 1, "vehicle_id": 2, "fleet_id": 3, "org_id": 4,
                                 "spool_dir": tmp_path, "bootstrap_servers": "127.0.0.1:1", argument: value}
    with pytest.raises(ValueError, match=message):
        IcsAnalytics(**arguments)


def test_kafka_and_home_come_from_the_environment(tmp_path, monkeypatch):
    """Changing only the import is enough: KAFKA_BOOTSTRAP_SERVERS and FLEETSTREAM_HOME are honoured."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19")
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLEETSTREAM_CONFIG", raising=False)
    monkeypatch.delenv("FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    client = IcsAnalytics(device_id=123, vehicle_id=456, fleet_id=789, org_id=1011)
    try:
        assert client.kafka.bootstrap_servers == "127.0.0.1:19"
        assert client.spool_dir == tmp_path / "home" / "vehicle-client" / "123-456"
        client.add_signal(copy.deepcopy(README_SIGNAL))
        assert client.spool_dir.is_dir() and not (tmp_path / ".fleetstream").exists()
    finally:
        client._stop.set()
        client._spool.close()


def test_explicit_settings_win_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19")
    settings = Settings(home=tmp_path / "home", kafka=KafkaSettings(bootstrap_servers="127.0.0.1:29",
                                                                    client_config={"client.id": "device"}))
    client = IcsAnalytics(1, 2, 3, 4, settings=settings, bootstrap_servers="127.0.0.1:39")
    try:
        # bootstrap_servers replaces only the address: the configured client options stay.
        assert client.kafka.bootstrap_servers == "127.0.0.1:39"
        assert client.kafka.client_config == {"client.id": "device"}
        assert client.spool_dir == tmp_path / "home" / "vehicle-client" / "1-2"
    finally:
        client._stop.set()
        client._spool.close()
    with pytest.raises(ValueError, match="not both"):
        IcsAnalytics(1, 2, 3, 4, kafka=settings.kafka, bootstrap_servers="127.0.0.1:39", spool_dir=tmp_path)


def test_every_public_method_says_what_it_does():
    for cls in (IcsAnalytics, AsyncIcsAnalytics):
        undocumented = [name for name, member in inspect.getmembers(cls)
                        if (not name.startswith("_") or name in ("__init__", "__enter__", "__exit__", "__aenter__",
                                                                  "__aexit__"))
                        and (inspect.isfunction(member) or isinstance(member, property))
                        and not inspect.getdoc(member)]
        assert undocumented == [], f"{cls.__name__}: {undocumented}"
    assert all(inspect.getdoc(getattr(vehicle_client, name)) for name in vehicle_client.__all__)


def test_the_async_client_shows_the_real_signature():
    sync, async_ = inspect.signature(IcsAnalytics.__init__), inspect.signature(AsyncIcsAnalytics.__init__)
    assert list(async_.parameters.values()) == list(sync.parameters.values())
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in async_.parameters.values())


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_the_client_knows_which_texts_the_forwarder_prints_itself(ms):
    """The client leaves time_text empty exactly when `payloads.iso_time` prints the same text."""
    assert vehicle_client._iso_z(ms) == payloads.iso_time(ms)
