"""WinPEP 8 runs: the protocol-buffers dyno-run layout and the TLV ECU-log layout, written by our own encoders.

No real .wp8 file is available: tests/data/files/make_files.py encodes both layouts from the contract.
"""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetstream.producers import wp8
from fleetstream.producers.files import FileFormatError, FileSample, ParsedFile, ParseOptions, load_mapping
from fleetstream.producers.inspection import inspect
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
        ("engine_speed", "unknown(code=8,sub=1)", "Dynojet 250i"), ("power", "unknown(code=4,sub=1)", "Dynojet 250i"),
        ("torque", "unknown(code=5,sub=1)", "Dynojet 250i"), ("speed", "mph", "Dynojet 250i"),
        ("force", "unknown(code=3,sub=1)", "Dynojet 250i"), ("afr", "AFR", "Wideband 1"),
        ("map", "unknown(code=7,sub=1)", "vehicle ECU"), ("iat", "degF", "vehicle ECU"),
        ("tps", "unknown(code=16,sub=1)", "vehicle ECU"), ("humidity", "unknown(code=10,sub=0)", "Atmospheric probe")]
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
    assert by_key[("afr", 1000)].value == pytest.approx(pull[1000].afr, rel=1e-6)  # 13/1: AFR, as stored
    assert by_key[("iat", 1000)].value == pytest.approx(pull[1000].iat_degf, rel=1e-6)  # stored in degC (6/1)


def test_hp_is_torque_times_rpm_over_5252() -> None:
    _, samples = parse_bytes(RUN.read_bytes())
    values = {(s.channel, s.timestamp_ms): s.value for s in samples}
    for time_ms in range(0, 2001, 100):
        expected = values[("torque", time_ms)] * values[("engine_speed", time_ms)] / 5252
        assert values[("power", time_ms)] == pytest.approx(expected, rel=1e-4)


# --- units: what the file declares (code, sub-field), nothing guessed ------------------------------------------
# The cases found in real files (issue 11), rebuilt with exactly those codes, sub-fields and values, in both
# layouts: (name, unit code, sub-field, values, published unit, published values).

F32 = struct.Struct("<f")


def f32(value: float) -> float:
    """What a value becomes when a file stores it as a 32-bit float."""
    return float(F32.unpack(F32.pack(value))[0])


REAL_FILE_CASES = [
    # Dynoware RT run: acceleration channels carry code 11 (read as AFR before; 1.5125 became 22.2345).
    ("Accel 1", 11, 0, [1.5125, 0.31], "unknown(code=11,sub=0)", [1.5125, 0.31]),
    ("Acceleration", 11, 0, [1.5125, -0.2], "unknown(code=11,sub=0)", [1.5125, -0.2]),
    # "Humidity" 39.2 with code 10 (published in mph/s before).
    ("Humidity", 10, 0, [39.2, 39.2], "unknown(code=10,sub=0)", [39.2, 39.2]),
    # A channel "afr" with code 13 holding lambda 0.775-1.259: its sub-field is not the AFR one.
    ("afr", 13, 0, [0.775, 1.259], "unknown(code=13,sub=0)", [0.775, 1.259]),
    # ECU log: "Air Fuel Ratio 1/2", code 13, sub-field 1, AFR 10.4-30 (published as lambda before).
    ("Air Fuel Ratio 1", 13, 1, [10.4, 30.0], "AFR", [10.4, 30.0]),
    ("Air Fuel Ratio 2", 13, 1, [1.5, 14.7], "AFR", [1.5, 14.7]),  # AFR by declaration, whatever the size
    # Temperatures with sub-field 1 hold degC (published as degF unconverted before).
    ("Coolant Temperature", 6, 1, [85.0, 88.0], "degF", [185.0, 190.4]),
    ("Intake Air Temperature", 6, 1, [38.0, 45.0], "degF", [100.4, 113.0]),
    # Speed: sub-field 1 mph (dyno "Speed 1", peak 67.98), sub-field 3 km/h (ECU "Vehicle Speed" 116).
    ("Speed 1", 2, 1, [67.98, 10.0], "mph", [67.98, 10.0]),
    ("Vehicle Speed", 2, 3, [116.0, 100.0], "mph", [116.0 * 0.621371192, 62.1371192]),
]


def run_with(cases: list[tuple[str, int, int, list[float]]], stoich_afr: float | None = 9.765) -> bytes:
    """A dyno run with one block per case, points 100 ms apart; field 29 set so a hidden use of it would show."""
    channels = [Wp8Channel(17, 0, index + 1, name, code, [(t * 100, v) for t, v in enumerate(values)], unit_sub=sub)
                for index, (name, code, sub, values) in enumerate(cases)]
    return wp8_run_bytes(channels, stoich_afr=stoich_afr)


def ecu_log_with(cases: list[tuple[str, int, int, list[float]]]) -> bytes:
    """An ECU log with one channel per case and one row per value index, 50 ms apart."""
    channels = [EcuChannel(name, code, unit_sub=sub) for name, code, sub, _ in cases]
    rows = [(90_000 + 50 * row, [values[row] for _, _, _, values in cases]) for row in range(len(cases[0][3]))]
    return wp8_ecu_log_bytes(channels, rows)


@pytest.mark.parametrize("layout", ["dyno run", "ECU log"])
@pytest.mark.parametrize(("name", "code", "sub", "stored", "unit", "published"), REAL_FILE_CASES,
                         ids=[case[0] for case in REAL_FILE_CASES])
def test_real_file_units_come_from_code_and_sub_field(layout: str, name: str, code: int, sub: int,
                                                      stored: list[float], unit: str, published: list[float]) -> None:
    build = run_with if layout == "dyno run" else ecu_log_with
    parsed, samples = parse_bytes(build([(name, code, sub, stored)]))
    assert [c.unit for c in parsed.channels] == [unit]
    assert [s.unit for s in samples] == [unit] * len(stored)
    if unit.startswith("unknown"):  # not converted: exactly the file's (32-bit) numbers
        assert [s.value for s in samples] == [f32(v) for v in stored]
    else:
        assert [s.value for s in samples] == pytest.approx(published, rel=1e-6)


def test_all_real_file_channels_in_one_run_keep_their_numbers() -> None:
    _, samples = parse_bytes(run_with([case[:4] for case in REAL_FILE_CASES]))
    published = {(s.channel, s.row): (s.unit, s.value) for s in samples}
    assert published[("accel_1", 0)] == ("unknown(code=11,sub=0)", f32(1.5125))  # not 22.2345
    assert published[("humidity", 0)] == ("unknown(code=10,sub=0)", f32(39.2))
    assert published[("afr", 0)] == ("unknown(code=13,sub=0)", f32(0.775))  # the lambda-valued "afr"
    assert published[("afr_2", 0)] == ("AFR", f32(10.4))  # Air Fuel Ratio 1
    assert published[("speed_2", 0)][0] == "mph"  # Vehicle Speed, from km/h


def test_tlv_channel_without_sub_field_is_unknown() -> None:
    data = wp8_ecu_log_bytes([EcuChannel("Vehicle Speed", 2)], [(1000, [116.0])])
    _, samples = parse_bytes(data)
    assert [(s.unit, s.value) for s in samples] == [("unknown(code=2,no sub-field)", 116.0)]


def test_unknown_code_never_falls_back_to_the_channel_name() -> None:
    channels = [Wp8Channel(102, 0, 2, "Engine Speed", 77, [(0, 900.0)], unit_sub=1)]
    _, samples = parse_bytes(wp8_run_bytes(channels))
    assert [(s.channel, s.unit, s.value) for s in samples] == [("engine_speed", "unknown(code=77,sub=1)", 900.0)]


def test_unknown_unit_is_warned_once_per_channel_in_stats_and_log(caplog: pytest.LogCaptureFixture) -> None:
    cases = [("Accel 1", 11, 0, [0.1 * i for i in range(50)]), ("Humidity", 10, 0, [39.2] * 50),
             ("Speed 1", 2, 1, [1.0] * 50)]
    with caplog.at_level("WARNING", logger="fleetstream.producers.files"):
        parsed, samples = parse_bytes(run_with(cases))
    assert len(samples) == 150
    notes = [issue for issue in parsed.stats.issues if "unit not known for certain" in issue.message]
    assert [(n.where, n.error) for n in notes] == [(notes[0].where, False), (notes[1].where, False)]
    assert "'Accel 1'" in notes[0].message and "unknown(code=11,sub=0)" in notes[0].message
    assert "'Humidity'" in notes[1].message and "unknown(code=10,sub=0)" in notes[1].message
    logged = [r.getMessage() for r in caplog.records if "unit not known for certain" in r.getMessage()]
    assert len(logged) == 2 and "run.wp8: byte " in logged[0]


def test_inspect_shows_the_unknown_unit_and_its_warning(tmp_path: Path) -> None:
    path = tmp_path / "accel.wp8"
    path.write_bytes(run_with([("Accel 1", 11, 0, [1.5125])]))
    report = inspect(path)
    assert [(c.channel, c.unit, c.max) for c in report.channels] == [("accel_1", "unknown(code=11,sub=0)",
                                                                     f32(1.5125))]
    assert "unknown(code=11,sub=0)" in report.to_text()
    assert any("'Accel 1': unit not known for certain" in issue.message for issue in report.issues)


def test_mapping_names_the_unit_of_an_unknown_channel() -> None:
    data = run_with([("Accel 1", 11, 0, [1.5]), ("Humidity", 10, 0, [39.2]), ("Vehicle Speed", 2, 3, [116.0])])
    mapping = load_mapping({"columns": {"Accel 1": {"channel": "acceleration", "unit": "km/h/s"},
                                        "Humidity": {"channel": "humidity", "unit": "%"},
                                        "Vehicle Speed": {"channel": "ecu_speed", "unit": "km/h"}}})
    parsed = wp8.parse(io.BytesIO(data), ParseOptions(label="run.wp8", mapping=mapping))
    samples = list(parsed.samples)
    assert [(s.channel, s.unit, round(s.value, 4)) for s in samples] == [
        ("acceleration", "mph/s", round(1.5 * 0.621371192, 4)), ("humidity", "%", 39.2),
        ("ecu_speed", "mph", round(116 * 0.621371192, 4))]
    assert not any("unit not known" in issue.message for issue in parsed.stats.issues)


def test_mapping_can_keep_a_channel_unknown_under_its_own_name() -> None:
    mapping = load_mapping({"columns": {"afr": {"channel": "wideband_raw", "unit": "unknown"}}})
    parsed = wp8.parse(io.BytesIO(run_with([("afr", 13, 0, [0.775])])), ParseOptions(label="x", mapping=mapping))
    assert [(s.channel, s.unit, s.value) for s in parsed.samples] == [("wideband_raw", "unknown", f32(0.775))]


def test_stoichiometric_field_is_shown_but_never_applied() -> None:
    parsed, samples = parse_bytes(run_with([("Air/Fuel Ratio", 13, 1, [0.9, 13.1])], stoich_afr=9.765))
    assert parsed.metadata["stoich_afr"] == "9.765"
    assert [round(s.value, 4) for s in samples] == [0.9, 13.1]  # declared AFR: 0.9 stays 0.9 (validation judges)
    without = parse_bytes(run_with([("Air/Fuel Ratio", 13, 1, [0.9])], stoich_afr=None))[0]
    assert "stoich_afr" not in without.metadata


def test_run_without_run_time_has_no_start_time() -> None:
    parsed, _ = parse_bytes(wp8_run_bytes([], run_time_ms=None))
    assert parsed.start_time_ms is None and parsed.channels == []


def test_repeated_channel_names_get_suffixes() -> None:
    channels = [Wp8Channel(19, 0, 1, "Air/Fuel Ratio", 11, [(0, 13.0)]),
                Wp8Channel(19, 1, 1, "Air/Fuel Ratio", 11, [(0, 12.5)])]
    parsed, _ = parse_bytes(wp8_run_bytes(channels))
    assert [c.channel for c in parsed.channels] == ["afr", "afr_2"]


def block_ends(data: bytes) -> list[int]:
    """Where each top-level field of a dyno run ends (walking the fixture with its own encoder's framing)."""
    ends, offset = [], 5
    handle = io.BytesIO(data)
    for item in wp8._fields(handle, 5, len(data), "x"):
        ends.append(item.end)
        offset = item.end
    assert offset == len(data)
    return ends


def test_dyno_run_cut_short_keeps_every_complete_channel_block() -> None:
    data = RUN.read_bytes()
    cut = data[:int(len(data) * 0.97)]  # 97 % present: the cut falls inside the last block (humidity)
    complete = [end for end in block_ends(data) if end <= len(cut)]
    tail_at = complete[-1]
    parsed, samples = parse_bytes(cut)
    full = parse_bytes(data)[1]
    kept = {c.channel for c in parsed.channels}
    assert len(kept) == len(complete) and len(kept) >= 8
    assert samples == [s for s in full if s.channel in kept]  # every complete block, every point, unchanged
    [issue] = [issue for issue in parsed.stats.issues if issue.error]
    assert parsed.stats.errors == 1 and issue.where == f"byte {tail_at}"
    assert f"{len(cut) - tail_at} bytes of an incomplete field" in issue.message and "cut short" in issue.message
    assert parsed.start_time_ms is None  # the run time (field 19) was in the lost tail
    with pytest.raises(FileFormatError, match=rf"^run.wp8: byte {tail_at}: expected complete top-level fields"):
        parse_bytes(cut, strict=True)


@pytest.mark.parametrize("missing", [1, 7, 9])
def test_dyno_run_cut_in_the_run_fields_keeps_all_blocks(missing: int) -> None:
    data = RUN.read_bytes()
    parsed, samples = parse_bytes(data[:-missing])
    assert len(parsed.channels) == 10 and len(samples) == len(parse_bytes(data)[1])
    [issue] = [issue for issue in parsed.stats.issues if issue.error]
    assert parsed.stats.errors == 1 and issue.where.startswith("byte ") and "cut short" in issue.message


def test_corrupt_block_inside_a_complete_run_is_still_fatal() -> None:
    block = pb_bytes(2, b"RPM") + pb_bytes(4, b"\x0d\x00")  # a point whose fixed32 has 1 of 4 bytes
    data = b"\xfe\xce\xfa\xce\x01" + pb_bytes(1, block) + pb_varint(15, 3)
    with pytest.raises(FileFormatError, match="truncated"):
        parse_bytes(data)


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
        ("engine_speed", "unknown(code=8,sub=1)", "ECU"), ("tps", "unknown(code=16,sub=1)", "ECU"),
        ("afr", "AFR", "external AFR module")]
    assert parsed.metadata["ecu_part_number"] == "32764-11B"
    assert parsed.stats.rows == 41 and len(samples) == 123
    assert samples[0] == FileSample(0, "engine_speed", "unknown(code=8,sub=1)", 0, 2500.0)  # 184250 ms -> 0
    assert samples[-3].timestamp_ms == 2000 and samples[-3].row == 40
    assert parsed.start_time_ms is None


def test_flat_and_nested_channel_tlvs_read_the_same() -> None:
    rows = ecu_rows(dyno_pull(duration_ms=500))
    nested = parse_bytes(wp8_ecu_log_bytes(ECU_CHANNELS, rows))
    flat = parse_bytes(wp8_ecu_log_bytes(ECU_CHANNELS, rows, flat_channels=True))
    assert nested[0].channels == flat[0].channels and nested[1] == flat[1]


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


@pytest.mark.parametrize("missing", [5, 16, 21])
def test_ecu_log_cut_short_keeps_the_rows_before_the_cut(missing: int) -> None:
    data = ECU_LOG.read_bytes()
    last_row = len(data) - (6 + 4 + 12)
    parsed, samples = parse_bytes(data[:-missing], "ecu_log.wp8")
    assert parsed.stats.rows == 40 and samples == parse_bytes(data)[1][:120]
    [issue] = [issue for issue in parsed.stats.issues if issue.error]
    assert parsed.stats.errors == 1 and issue.where == f"byte {last_row}"
    assert "cut short; the 40 rows before it are kept" in issue.message
    with pytest.raises(FileFormatError, match=rf"^ecu_log.wp8: byte {last_row}: expected a complete row \(22 bytes"):
        parse_bytes(data[:-missing], "ecu_log.wp8", strict=True)


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
