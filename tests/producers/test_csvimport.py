"""Dyno CSV exports: delimiters, encodings, header detection, units rows, time units, mapping, bad rows."""

from __future__ import annotations

import io

import pytest

from fleetstream.producers import csvimport
from fleetstream.producers.files import FileFormatError, FileSample, ParsedFile, ParseOptions, load_mapping
from tests.data.files.make_files import HERE, csv_text, dyno_pull

FIXTURE = HERE / "pull.csv"


def parse_bytes(data: bytes, mapping: dict | None = None, strict: bool = False,
                label: str = "pull.csv") -> tuple[ParsedFile, list[FileSample]]:
    parsed = csvimport.parse(io.BytesIO(data), ParseOptions(label=label, mapping=load_mapping(mapping), strict=strict))
    return parsed, list(parsed.samples)


def test_fixture_tab_separated_cp1252() -> None:
    parsed, samples = parse_bytes(FIXTURE.read_bytes())
    assert parsed.metadata["encoding"] == "cp1252" and parsed.metadata["delimiter"] == "tab"
    assert parsed.metadata["time_unit"] == "s"
    # Only the engine speed (rpm) and the IAT (header says °F) have a unit for certain; the other headers state
    # none and their names are seen in several units: imported unchanged as `unknown`.
    assert [(c.channel, c.unit, c.device) for c in parsed.channels] == [
        ("engine_speed", "rpm", "PV"), ("power", "unknown", "DWRT CPU"), ("torque", "unknown", "DWRT CPU"),
        ("afr", "unknown", "PV"), ("map", "unknown", "PV"), ("iat", "degF", "PV"), ("tps", "unknown", "PV"),
        ("speed", "unknown", "DWRT CPU")]
    assert parsed.stats.rows == 101 and len(samples) == 808


def test_values_at_known_rows() -> None:
    pull = {p.time_ms: p for p in dyno_pull(duration_ms=2000)}
    _, samples = parse_bytes(FIXTURE.read_bytes())
    by_key = {(s.channel, s.timestamp_ms): s for s in samples}
    assert by_key[("torque", 1000)] == FileSample(50, "torque", "unknown", 1000, pull[1000].torque_ftlb)
    assert by_key[("iat", 1980)].value == pytest.approx(pull[1980].iat_degf)


def test_unknown_column_is_reported_not_imported() -> None:
    parsed, samples = parse_bytes(FIXTURE.read_bytes())
    assert parsed.stats.skipped_columns == ["(DWRT CPU) Correction Factor"]
    assert "correction" not in {s.channel for s in samples}
    assert parsed.stats.warnings == 1 + 6  # the skipped column, and one per column of unstated unit


@pytest.mark.parametrize(("header", "channel"), [("Torque Drum 1", "torque"), ("Air/Fuel Ratio", "afr"),
                                                 ("Intake Air Temp", "iat"), ("Vehicle Speed", "speed"),
                                                 ("MAP", "map"), ("Power", "power")])
def test_a_known_name_without_a_stated_unit_is_not_given_one(header: str, channel: str) -> None:
    # Seen in several units each (ft-lb/N-m, AFR/lambda, degF/degC, mph/km/h, kPa/psi, hp/kW): never guessed.
    parsed, samples = parse_bytes(f"Time (s),{header}\n0,0.87\n".encode())
    assert [(s.channel, s.unit, s.value) for s in samples] == [(channel, "unknown", 0.87)]
    [note] = parsed.stats.issues
    assert f"{header!r}: unit not known for certain" in note.message and not note.error


def test_mapping_without_a_unit_claims_none() -> None:
    _, samples = parse_bytes(b"Time (s),Boost\n0,14.5\n", {"columns": {"Boost": {"channel": "map"}}})
    assert [(s.channel, s.unit, s.value) for s in samples] == [("map", "unknown", 14.5)]


def test_mapping_names_the_unit_of_a_column_that_does_not_state_it() -> None:
    _, samples = parse_bytes(b"Time (s),Air/Fuel Ratio\n0,0.87\n",
                             {"columns": {"Air/Fuel Ratio": {"channel": "lambda", "unit": "lambda"}}})
    assert [(s.channel, s.unit, s.value) for s in samples] == [("lambda", "lambda", 0.87)]


def test_mapping_imports_an_unknown_column_and_skips_a_known_one() -> None:
    mapping = {"columns": {"(DWRT CPU) Correction Factor": {"channel": "correction_factor", "unit": "ratio"},
                           "Speed Drum 1": "skip"}}
    parsed, samples = parse_bytes(FIXTURE.read_bytes(), mapping)
    channels = [c.channel for c in parsed.channels]
    assert "correction_factor" in channels and "speed" not in channels
    assert {s.value for s in samples if s.channel == "correction_factor"} == {1.012}
    assert parsed.stats.skipped_columns == ["(DWRT CPU) Speed Drum 1"]


def test_mapping_unit_converts_values() -> None:
    data = b"Time (s),Boost\n0.0,14.5\n"
    _, samples = parse_bytes(data, {"columns": {"Boost": {"channel": "map", "unit": "psi"}}})
    assert samples[0].unit == "kPa" and samples[0].value == pytest.approx(99.97, abs=0.01)


def test_utf8_bom_comma_file() -> None:
    text = csv_text(dyno_pull(duration_ms=200), delimiter=",")
    parsed, samples = parse_bytes(text.encode("utf-8-sig"))
    assert parsed.metadata["encoding"] == "utf-8-sig" and parsed.metadata["delimiter"] == "comma"
    assert parsed.metadata["time_column"] == "Time (s)"  # BOM not part of the first header
    assert parsed.channels[5].source_name == "(PV) Intake Air Temp (°F)" and parsed.channels[5].unit == "degF"
    assert len(samples) == 11 * 8


def test_units_row_gives_units_and_converts() -> None:
    data = "Time\tRPM\tTorque\tIAT\nms\trpm\tN·m\t°C\n0\t2500\t100\t20\n10\t2510\t110\t21\n".encode()
    parsed, samples = parse_bytes(data)
    assert parsed.metadata["units_row"] == "yes" and parsed.metadata["time_unit"] == "ms"
    assert [(c.channel, c.file_unit, c.unit) for c in parsed.channels] == [
        ("engine_speed", "rpm", "rpm"), ("torque", "N·m", "ft-lb"), ("iat", "°C", "degF")]
    assert samples[1][:4] == (0, "torque", "ft-lb", 0) and samples[1].value == pytest.approx(73.756, abs=1e-3)
    assert samples[2].value == pytest.approx(68.0)
    assert samples[3].timestamp_ms == 10


@pytest.mark.parametrize("times", [["0", "10", "20"], ["0.00", "0.01", "0.02"], ["0", "1", "2"]])
def test_time_unit_not_stated_is_refused_not_guessed(times: list[str]) -> None:
    data = ("Time,RPM\n" + "".join(f"{t},2500\n" for t in times)).encode()
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(data)
    assert str(caught.value) == (
        "pull.csv: line 1: expected the unit of time column 'Time' stated (a header like 'Time (s)' or 'Time (ms)', "
        f"a units row, or time_unit: s|ms in the mapping), found none (first values {', '.join(times)})")
    _, samples = parse_bytes(data, {"time_unit": "ms"})
    assert [s.timestamp_ms for s in samples] == [round(float(t)) for t in times]


def test_time_column_and_unit_from_mapping() -> None:
    data = b"Clock,RPM\n1,2500\n2,2600\n"
    parsed, samples = parse_bytes(data, {"time_column": "Clock", "time_unit": "s"})
    assert [s.timestamp_ms for s in samples] == [1000, 2000]
    assert parsed.stats.warnings == 0


def test_missing_time_column_is_a_format_error() -> None:
    with pytest.raises(FileFormatError, match=r"^pull.csv: line 1: expected a time column .* found columns 'RPM'"):
        parse_bytes(b"RPM,MAP\n1,2\n")


def test_empty_file_is_a_format_error() -> None:
    with pytest.raises(FileFormatError, match=r"line 1: expected a header row"):
        parse_bytes(b"")


def test_bad_rows_are_counted_with_line_numbers() -> None:
    data = b"Time (ms),RPM,MAP\n0,2500,97\n10,abc,98\n20,2520\n,2530,99\nx,1,1\n5,2500,97\n30,2540,\n"
    parsed, samples = parse_bytes(data)
    assert [(s.timestamp_ms, s.channel, s.value) for s in samples] == [
        (0, "engine_speed", 2500.0), (0, "map", 97.0), (10, "map", 98.0), (30, "engine_speed", 2540.0)]
    errors = [(issue.where, issue.message) for issue in parsed.stats.issues if issue.error]
    assert errors == [
        ("line 3", "expected a number in column 2 ('RPM'), found 'abc'"),
        ("line 4", "expected 3 fields (as in the header), found 2"),
        ("line 5", "expected a time in column 1, found ''"),
        ("line 6", "expected a time in column 1, found 'x'"),
        ("line 7", "expected time >= 10 ms (rows in time order), found 5 ms"),
    ]
    assert parsed.stats.errors == 5


def test_strict_mode_raises_with_file_line_and_expectation() -> None:
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(b"Time (ms),RPM\n0,2500\n10,abc\n", strict=True)
    assert str(caught.value) == "pull.csv: line 3: expected a number in column 2 ('RPM'), found 'abc'"


def test_repeated_channels_get_suffixes() -> None:
    parsed, _ = parse_bytes(b"Time (s),(PV) Engine Speed,(DWRT CPU) Engine Speed\n0,1,2\n")
    assert [c.channel for c in parsed.channels] == ["engine_speed", "engine_speed_2"]


def test_sniff() -> None:
    assert csvimport.sniff(b"Time\tRPM\n")
    assert csvimport.sniff(b"\xef\xbb\xbfTime,RPM\n")
    assert not csvimport.sniff(b"\xfe\xce\xfa\xce\x01\x00")
    assert not csvimport.sniff(b"")
