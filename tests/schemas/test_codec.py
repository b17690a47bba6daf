from __future__ import annotations

import math

import pytest
from fastavro.schema import fingerprint

from fleetstream.schemas import codec, registry
from fleetstream.schemas.codec import Codec, DecodeError

SIGNAL = {
    "batch_id": "b1", "source": "test", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1", "device_id": "d1",
    "name": "EngineSpeed", "unit": "rpm",
    "samples": [{"timestamp_ms": 1_700_000_000_000, "value": 812.5}, {"timestamp_ms": 1_700_000_000_100,
                                                                       "svalue": "idle"}],
}


def test_crc64_avro_fingerprint_bytes_match_the_avro_test_vectors():
    # Apache Avro's own vectors: Rabin("null") = 7195948357588979594, and the single-object header of
    # the schema "int" is C3 01 8F 5C 39 3F 1A D5 75 72 (the fingerprint 0x7275d51a3f395c8f little-endian).
    assert int.from_bytes(bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")), "little") == 7195948357588979594
    assert bytes.fromhex(fingerprint('"int"', "CRC-64-AVRO")) == bytes.fromhex("8f5c393f1ad57572")


def test_single_object_encoding_has_marker_and_fingerprint_of_latest_schema():
    data = codec.encode("signal_batch", SIGNAL)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == registry.latest("signal_batch").fingerprint


def test_decode_returns_the_record_with_defaults_filled():
    decoded = codec.decode(codec.encode("signal_batch", SIGNAL), "signal_batch")
    assert decoded["samples"][0]["value"] == 812.5
    assert decoded["samples"][1]["svalue"] == "idle"
    assert decoded["samples"][0]["flags"] == 0
    assert decoded["param_type"] == "RAW"


def test_old_version_messages_are_resolved_to_the_latest_schema():
    import io

    import fastavro

    v1 = registry.history("signal_batch")[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1.parsed, SIGNAL)
    data = codec.SINGLE_OBJECT_MARKER + v1.fingerprint + buf.getvalue()
    assert codec.decode(data)["samples"][0]["flags"] == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not Avro single-object encoding"),
        (b"{\"json\": true}", "not Avro single-object encoding"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "unknown schema fingerprint"),
    ],
)
def test_undecodable_bytes_raise_decode_error_with_reason(data, message):
    with pytest.raises(DecodeError, match=message):
        codec.decode(data)


def test_truncated_body_is_a_decode_error():
    data = codec.encode("signal_batch", SIGNAL)
    with pytest.raises(DecodeError, match="corrupt signal_batch"):
        codec.decode(data[:20])


def test_wrong_record_type_for_the_topic_is_a_decode_error():
    with pytest.raises(DecodeError, match="expected a gps_batch record"):
        codec.decode(codec.encode("signal_batch", SIGNAL), "gps_batch")


def test_nan_values_survive_encoding():
    record = {**SIGNAL, "samples": [{"timestamp_ms": 1, "value": math.nan}]}
    assert math.isnan(codec.decode(codec.encode("signal_batch", record))["samples"][0]["value"])


def test_confluent_wire_format_with_mock_registry_round_trips():
    c = Codec("mock://fleetstream-test")
    data = c.encode("signal_batch", SIGNAL, topic="telemetry.signals")
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert c._registry().get_schema(schema_id).schema_type == "AVRO"
    assert c.decode(data, "signal_batch")["vehicle_id"] == "v1"


def test_registry_codec_still_reads_single_object_encoding():
    assert Codec("mock://fleetstream-test-2").decode(codec.encode("signal_batch", SIGNAL))["name"] == "EngineSpeed"


def test_confluent_framed_record_without_registry_is_a_clear_error():
    data = Codec("mock://fleetstream-test-3").encode("signal_batch", SIGNAL, topic="t")
    with pytest.raises(DecodeError, match="no schema registry configured"):
        Codec().decode(data)
