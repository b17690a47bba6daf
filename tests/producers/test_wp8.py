"""WinPEP 8 runs: the protocol-buffers dyno-run layout and the TLV ECU-log layout, written by our own encoders.

No real .wp8 file is available: tests/data/files/make_files.py encodes both layouts from the contract.
"""

from __future__ import annotations

import contextlib
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers import wp8
from producers.files import FileFormatError, FileSample, ParsedFile, ParseOptions
from tests.data.files.make_files import (
    ECU_CHANNELS,
    HERE,
    RUN_TIME_MS,
    EcuChannel,
    Wp8Channel,
    dyno_pull,
    ecu_rows,
    pb_bytes,
    pb_varint,
    tlv,
    varint,
    wp8_ecu_log_bytes,
    wp8_run_bytes,
)

RUN = HERE / "run.wp8"
ECU_LOG = HERE / "ecu_log.wp8"


def parse_bytes(data: bytes, label: str = "run.wp8", strict: bool = False) -> tuple[ParsedFile, list[FileSample]]:
    parsed = wp8.parse(io.BytesIO(data), ParseOptions(label=label, strict=strict))
    return parsed, list(parsed.samples)


# --- dyno run (protocol buffers) -----------------------------------------------------------------------------


def test_dyno_run_channels_units_counts_and_run_fields() -> None:
    parsed, samples = parse_bytes(RUN.read_bytes())
    assert [(c.channel, c.unit, c.device) for c in parsed.channels] == [
        ("engine_speed", "rpm", "Dynojet 250i"), ("power", "hp", "Dynojet 250i"), ("torque", "ft-lb", "Dynojet 250i"),
        ("speed", "mph", "Dynojet 250i"), ("force", "lbf", "Dynojet 250i"), ("afr", "AFR", "Wideband 1"),
        ("map", "kPa", "vehicle ECU"), ("iat", "degF", "vehicle ECU"), ("tps", "%", "vehicle ECU"),
        ("humidity", "%", "Atmospheric probe")]
    counts = {c.channel: sum(1 for s in samples if s.channel == c.channel) for c in parsed.channels}
    assert counts == {"engine_speed": 201, "power": 201, "torque": 201, "speed": 201, "force": 201, "afr": 101,
                      "map": 41, "iat": 41, "tps": 41, "humidity": 3}
    assert parsed.start_time_ms == RUN_TIME_MS  # FILETIME field 19, written after the channel blocks
    assert parsed.metadata["dyno_serial"] == "250iX-41873"
    assert parsed.metadata["ecu_part_number"] == "40500412B"
    assert parsed.metadata["stoich_afr"] == "14.7"


def test_dyno_run_values_at_known_points() -> None:
    pull = {p.time_ms: p for p in dyno_pull(duration_ms=2000)}
    _, samples = parse_bytes(RUN.read_bytes())
    by_key = {(s.channel, s.timestamp_ms): s for s in samples}
    assert by_key[("engine_speed", 0)].row == 0 and by_key[("engine_speed", 0)].value == 2500.0  # proto3 omits t=0
    assert by_key[("power", 1000)].row == 100
    assert by_key[("power", 1000)].value == pytest.approx(pull[1000].power_hp, rel=1e-6)
    assert by_key[("torque", 1500)].value == pytest.approx(pull[1500].torque_ftlb, rel=1e-6)
    assert by_key[("map", 1000)].value == pytest.approx(pull[1000].map_kpa, rel=1e-6)


def test_hp_is_torque_times_rpm_over_5252() -> None:
    _, samples = parse_bytes(RUN.read_bytes())
    values = {(s.channel, s.timestamp_ms): s.value for s in samples}
    for time_ms in range(0, 2001, 100):
        expected = values[("torque", time_ms)] * values[("engine_speed", time_ms)] / 5252
        assert values[("power", time_ms)] == pytest.approx(expected, rel=1e-4)


def test_afr_channel_holding_lambda_becomes_afr_with_the_run_stoich() -> None:
    # The fixture's wideband stores lambda (AFR / 14.7); the import publishes AFR.
    pull = {p.time_ms: p for p in dyno_pull(duration_ms=2000)}
    _, samples = parse_bytes(RUN.read_bytes())
    afr = {s.timestamp_ms: s.value for s in samples if s.channel == "afr"}
    assert afr[1000] == pytest.approx(pull[1000].afr, rel=1e-6)
    assert all(12.0 < value < 14.0 for value in afr.values())


@pytest.mark.parametrize(("reading", "stoich", "expected"), [
    (0.85, 9.765, 0.85 * 9.765),   # E85 lambda, stoich from field 29
    (1.0, None, 14.7),             # no field 29: gasoline
    (12.9, 9.765, 12.9),           # already AFR
])
def test_lambda_heuristic_uses_field_29(reading: float, stoich: float | None, expected: float) -> None:
    channel = Wp8Channel(19, 0, 1, "Air/Fuel Ratio", 11, [(10, reading)])
    _, samples = parse_bytes(wp8_run_bytes([channel], stoich_afr=stoich))
    assert samples[0].value == pytest.approx(expected, rel=1e-6)


def test_unit_code_lambda_stays_lambda_and_unknown_code_falls_back_to_the_name() -> None:
    channels = [Wp8Channel(19, 0, 1, "Lambda", 13, [(0, 0.9)]), Wp8Channel(102, 0, 2, "Engine Speed", 77, [(0, 900)])]
    parsed, samples = parse_bytes(wp8_run_bytes(channels))
    assert [(s.channel, s.unit, round(s.value, 3)) for s in samples] == [("lambda", "lambda", 0.9),
                                                                        ("engine_speed", "rpm", 900.0)]
    assert any("unit code 77 not known; assumed rpm" in issue.message for issue in parsed.stats.issues)


def test_run_without_run_time_has_no_start_time() -> None:
    parsed, _ = parse_bytes(wp8_run_bytes([], run_time_ms=None))
    assert parsed.start_time_ms is None and parsed.channels == []


def test_repeated_channel_names_get_suffixes() -> None:
    channels = [Wp8Channel(19, 0, 1, "Air/Fuel Ratio", 11, [(0, 13.0)]),
                Wp8Channel(19, 1, 1, "Air/Fuel Ratio", 11, [(0, 12.5)])]
    parsed, _ = parse_bytes(wp8_run_bytes(channels))
    assert [c.channel for c in parsed.channels] == ["afr", "afr_2"]


def test_truncated_dyno_run_names_the_offset() -> None:
    data = RUN.read_bytes()[:-7]
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(data)
    assert caught.value.where == "byte" and 5 <= caught.value.position < len(data)
    assert "truncated" in str(caught.value) and str(caught.value).startswith("run.wp8: byte ")


def test_group_wire_type_is_rejected() -> None:
    data = b"\xfe\xce\xfa\xce\x01" + varint(6 << 3 | 3)
    with pytest.raises(FileFormatError, match=r"run.wp8: byte 5: expected protobuf wire type 0, 1, 2 or 5, found "
                                              r"wire type 3 \(field 6\)"):
        parse_bytes(data)


def test_channel_block_must_be_length_delimited() -> None:
    data = b"\xfe\xce\xfa\xce\x01" + pb_varint(1, 5)
    with pytest.raises(FileFormatError, match="channel block"):
        parse_bytes(data)


def test_point_with_nested_garbage_reports_its_offset() -> None:
    block = pb_bytes(2, b"RPM") + pb_bytes(4, b"\x0d\x00")  # field 1 fixed32 with 1 of 4 bytes
    data = b"\xfe\xce\xfa\xce\x01" + pb_bytes(1, block)
    with pytest.raises(FileFormatError, match="truncated"):
        parse_bytes(data)


# --- ECU log (TLV) ---------------------------------------------------------------------------------------------


def test_ecu_log_channels_rows_and_relative_time() -> None:
    parsed, samples = parse_bytes(ECU_LOG.read_bytes(), "ecu_log.wp8")
    assert [(c.channel, c.unit, c.device) for c in parsed.channels] == [
        ("engine_speed", "rpm", "ECU"), ("tps", "%", "ECU"), ("afr", "AFR", "external AFR module")]
    assert parsed.metadata["ecu_part_number"] == "32764-11B"
    assert parsed.stats.rows == 41 and len(samples) == 123
    assert samples[0] == FileSample(0, "engine_speed", "rpm", 0, 2500.0)  # 184250 ms since ECU start -> 0
    assert samples[-3].timestamp_ms == 2000 and samples[-3].row == 40
    assert parsed.start_time_ms is None


def test_flat_and_nested_channel_tlvs_read_the_same() -> None:
    rows = ecu_rows(dyno_pull(duration_ms=500))
    nested = parse_bytes(wp8_ecu_log_bytes(ECU_CHANNELS, rows))
    flat = parse_bytes(wp8_ecu_log_bytes(ECU_CHANNELS, rows, flat_channels=True))
    assert nested[0].channels == flat[0].channels and nested[1] == flat[1]


def test_lambda_in_ecu_afr_channel_uses_gasoline_stoich() -> None:
    data = wp8_ecu_log_bytes([EcuChannel("Air/Fuel Ratio", 11, 2)], [(70000, [0.9]), (70100, [13.1])])
    _, samples = parse_bytes(data)
    assert [round(s.value, 3) for s in samples] == [13.23, 13.1]


def test_wrong_magic_names_byte_0() -> None:
    with pytest.raises(FileFormatError, match=r"^run.wp8: byte 0: expected magic FE CE FA CE \(WinPEP 8 run file\), "
                                              r"found 50 4B 03 04$"):
        parse_bytes(b"PK\x03\x04\x14\x00\x00\x00")


def test_unknown_layout_byte_names_byte_4() -> None:
    with pytest.raises(FileFormatError, match=r"byte 4: expected layout byte 0x01 .* found 0x02"):
        parse_bytes(b"\xfe\xce\xfa\xce\x02")


def test_unknown_header_tag_names_byte_9() -> None:
    header = tlv(0x012A, b"x") + tlv(0xFFFF)
    data = b"\xfe\xce\xfa\xce\x04" + struct.pack("<I", len(header)) + header
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(data)
    assert str(caught.value) == ("run.wp8: byte 9: expected TLV tag 0x1000 or 0xFFFF (or 0x0001 part number), "
                                 "found 0x012a")


def test_truncated_ecu_log_names_the_row_offset() -> None:
    data = ECU_LOG.read_bytes()
    cut = data[:-5]
    last_row = len(data) - (6 + 4 + 12)
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(cut, "ecu_log.wp8")
    assert caught.value.position == last_row + 6
    assert "row data" in str(caught.value) and "truncated" in str(caught.value)


def test_row_of_the_wrong_length_is_rejected() -> None:
    data = wp8_ecu_log_bytes(ECU_CHANNELS, []) + tlv(0x1003, struct.pack("<If", 1, 2.0))
    with pytest.raises(FileFormatError, match=r"expected row length 16 \(timestamp and 3 floats\), found 8"):
        parse_bytes(data)


def test_header_length_beyond_the_file_is_rejected() -> None:
    with pytest.raises(FileFormatError, match=r"byte 5: expected a header length of at most 3"):
        parse_bytes(b"\xfe\xce\xfa\xce\x04" + struct.pack("<I", 1000) + b"abc")


def test_nan_values_are_counted_errors_with_their_offset() -> None:
    data = wp8_ecu_log_bytes([EcuChannel("Engine Speed", 8)], [(1000, [float("nan")]), (1010, [900.0])])
    parsed, samples = parse_bytes(data)
    assert [s.value for s in samples] == [900.0] and parsed.stats.errors == 1
    assert parsed.stats.issues[0].where.startswith("byte ")
    with pytest.raises(FileFormatError, match="expected a finite engine_speed value, found nan"):
        parse_bytes(data, strict=True)


def test_filetime_conversion() -> None:
    assert wp8.filetime_to_ms(133_600_000_000_000_000) == 1_715_526_400_000
    assert wp8.filetime_to_ms(0) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([b"", b"\xfe\xce\xfa\xce", b"\xfe\xce\xfa\xce\x01", b"\xfe\xce\xfa\xce\x04"]),
       st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_file_format_error(prefix: bytes, tail: bytes) -> None:
    with contextlib.suppress(FileFormatError):
        parse_bytes(prefix + tail)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(RUN.read_bytes()) - 1), st.integers(min_value=0, max_value=255))
def test_corrupted_real_layout_raises_only_file_format_error(position: int, byte: int) -> None:
    data = bytearray(RUN.read_bytes())
    data[position] = byte
    with contextlib.suppress(FileFormatError):
        parse_bytes(bytes(data))
