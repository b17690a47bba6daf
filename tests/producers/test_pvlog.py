"""Power Vision logs: the Pro-XY CSV text layout, observed-only samples, the carried-forward pivot, bad files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetstream.producers import pvlog
from fleetstream.producers.files import FileFormatError, FileSample, ParsedFile, ParseOptions
from tests.data.files.make_files import HERE, PV_SIGNALS, dyno_pull, pvlog_text

FIXTURE = HERE / "pull.pvlog"
HEADER = ('Dynojet Power Vision Log File\n"Format:","Pro-XY CSV 1.0.0"\n'
          '1,"PV","1001","Engine Speed","rpm","","#ff0000"\n2,"PV","1002","Intake Air Temp","°C","",""\n\n'
          '"Time(ms)","Signal","Value"\n')


def parse_bytes(data: bytes, strict: bool = False, label: str = "run.pvlog") -> tuple[ParsedFile, list[FileSample]]:
    parsed = pvlog.parse(io.BytesIO(data), ParseOptions(label=label, strict=strict))
    return parsed, list(parsed.samples)


def test_fixture_channels_units_and_counts() -> None:
    parsed, samples = parse_bytes(FIXTURE.read_bytes())
    assert [(c.channel, c.unit) for c in parsed.channels] == [
        ("engine_speed", "rpm"), ("power", "hp"), ("torque", "ft-lb"), ("afr", "AFR"), ("map", "kPa"),
        ("iat", "degF"), ("tps", "%"), ("spark_advance", "deg")]
    assert parsed.metadata["format"] == "Pro-XY CSV 1.0.0"
    assert parsed.stats.rows == 101  # 0..2000 ms every 20 ms
    per_channel = {c.channel: sum(1 for s in samples if s.channel == c.channel) for c in parsed.channels}
    # Each signal at its own rate (20, 40 or 200 ms): only observed values become samples.
    assert per_channel == {"engine_speed": 101, "power": 101, "torque": 101, "afr": 51, "map": 101, "iat": 11,
                           "tps": 101, "spark_advance": 51}
    assert parsed.stats.samples == len(samples) and parsed.stats.errors == 0


def test_values_at_known_rows_match_the_simulated_pull() -> None:
    pull = {p.time_ms: p for p in dyno_pull(duration_ms=2000)}
    _, samples = parse_bytes(FIXTURE.read_bytes())
    by_key = {(s.channel, s.timestamp_ms): s for s in samples}
    assert by_key[("engine_speed", 1000)].value == pytest.approx(pull[1000].rpm)
    assert by_key[("engine_speed", 1000)].row == 50
    assert by_key[("torque", 460)].value == pytest.approx(pull[460].torque_ftlb)
    assert by_key[("afr", 2000)].value == pytest.approx(pull[2000].afr)
    assert by_key[("iat", 1800)].value == pytest.approx(pull[1800].iat_degf)
    assert ("iat", 20) not in by_key  # not carried forward into samples


def test_units_are_converted_to_canonical() -> None:
    _, samples = parse_bytes((HEADER + "0,1,2500\n0,2,30\n").encode())
    assert samples == [FileSample(0, "engine_speed", "rpm", 0, 2500.0), FileSample(0, "iat", "degF", 0, 86.0)]


def test_signal_in_unknown_unit_is_reported_not_sent() -> None:
    text = HEADER.replace('"\n\n"Time(ms)"', '"\n3,"PV","1003","Fuel Used","furlongs","",""\n\n"Time(ms)"')
    parsed, samples = parse_bytes((text + "0,1,2500\n0,2,30\n0,3,7\n").encode())
    assert parsed.stats.skipped_columns == ["Fuel Used"]
    assert {s.channel for s in samples} == {c.channel for c in parsed.channels} == {"engine_speed", "iat"}
    assert any("unit 'furlongs'" in issue.message and issue.where == "line 5" for issue in parsed.stats.issues)


def test_pivot_carries_values_forward() -> None:
    parsed = pvlog.parse(io.BytesIO(FIXTURE.read_bytes()), ParseOptions(label="pull.pvlog"))
    rows = list(pvlog.pivot(parsed))
    assert len(rows) == 101
    iat = [c.channel for c in parsed.channels].index("iat")
    afr = [c.channel for c in parsed.channels].index("afr")
    (t0, first), (t1, second) = rows[0], rows[1]
    assert (t0, t1) == (0, 20)
    assert second[iat] == first[iat]  # IAT logged every 200 ms: carried forward
    assert second[afr] == first[afr]


def test_pivot_is_none_before_first_observation_and_exports_csv() -> None:
    parsed = pvlog.parse(io.BytesIO((HEADER + "0,1,2500\n10,2,30\n20,1,2600\n").encode()), ParseOptions("x"))
    out = io.StringIO()
    assert pvlog.write_pivot_csv(parsed, out) == 3
    assert out.getvalue().splitlines() == ["time_ms,engine_speed (rpm),iat (degF)", "0,2500,", "10,2500,86",
                                           "20,2600,86"]


def test_banner_may_be_quoted_and_separated_by_blank_lines() -> None:
    text = '"Dynojet Power Vision Log File"\n\n' + HEADER.split("\n", 1)[1] + "5,1,900\n"
    _, samples = parse_bytes(text.encode())
    assert [s.value for s in samples] == [900.0]


@pytest.mark.parametrize(("text", "position", "expected"), [
    ('Dynojet Power Vision Log File\n1,"PV","1","RPM","rpm","",""\n', 2, '"Format:","Pro-XY CSV 1.0.0" after'),
    ('Dynojet Power Vision Log File\n"Format:","Pro-XY CSV 2.0.0"\n', 2, "format Pro-XY CSV 1.x"),
    ('Dynojet Power Vision Log File\n"Format:","Pro-XY CSV 1.0.0"\n1,"PV","1","RPM","rpm","",""\n', 4,
     '"Time(ms)","Signal","Value" header'),
    ('Dynojet Power Vision Log File\n"Format:","Pro-XY CSV 1.0.0"\nRPM,rpm\n', 3, "a signal line"),
    ('Dynojet Power Vision Log File\n"Format:","Pro-XY CSV 1.0.0"\n1,"a","b","RPM","rpm","",""\n'
     '1,"a","b","MAP","kPa","",""\n', 4, "each signal index declared once"),
])
def test_malformed_header_names_the_line_and_what_was_expected(text: str, position: int, expected: str) -> None:
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(text.encode(), label="bad.pvlog")
    assert caught.value.where == "line" and caught.value.position == position
    assert str(caught.value).startswith(f"bad.pvlog: line {position}: expected ")
    assert expected in str(caught.value)


def test_binary_file_is_rejected_naming_the_supported_layout() -> None:
    with pytest.raises(FileFormatError) as caught:
        parse_bytes(b"\xfe\xce\xfa\xce\x01\x0a\x00\x00binary", label="run.pvlog")
    message = str(caught.value)
    assert message.startswith("run.pvlog: line 1: expected first line 'Dynojet Power Vision Log File'")
    assert "Pro-XY CSV" in message and "binary data" in message


def test_bad_rows_are_counted_with_line_numbers() -> None:
    text = HEADER + "0,1,2500\n0,9,1\n10,1,abc\n5,1,2400\n20,1,2600,7\n30,1,nan\n40,1,2700\n"
    parsed, samples = parse_bytes(text.encode())
    # The bad row at 10 ms does not advance time, so 5 ms is still in order.
    assert [s.value for s in samples] == [2500.0, 2400.0, 2700.0]
    assert parsed.stats.errors == 4
    assert [issue.where for issue in parsed.stats.issues if issue.error] == ["line 8", "line 9", "line 11", "line 12"]
    messages = [issue.message for issue in parsed.stats.issues]
    assert messages[0] == "expected a signal index declared in the header (1, 2), found '9'"
    assert messages[1] == "expected a number for signal 1, found 'abc'"
    assert messages[2].startswith("expected 3 fields time_ms,signal,value, found 4 fields")
    assert messages[3] == "expected a number for signal 1, found 'nan'"


def test_strict_mode_raises_on_the_first_bad_row() -> None:
    with pytest.raises(FileFormatError, match=r"run.pvlog: line 8: expected a number for signal 1, found 'x'"):
        parse_bytes((HEADER + "0,1,2500\n10,1,x\n").encode(), strict=True)


def test_rows_out_of_time_order_are_errors() -> None:
    parsed, samples = parse_bytes((HEADER + "100,1,2500\n50,1,2400\n150,1,2600\n").encode())
    assert [s.timestamp_ms for s in samples] == [100, 150]
    assert parsed.stats.issues[0].message == "expected time >= 100 ms (rows in time order), found 50 ms"


def test_generated_text_matches_the_fixture() -> None:
    assert pvlog_text(dyno_pull(duration_ms=2000)).encode() == FIXTURE.read_bytes()
    assert len(PV_SIGNALS) == 8


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400),
                 st.binary(max_size=300).map(lambda tail: HEADER.encode() + tail),
                 st.text(max_size=300).map(lambda tail: (HEADER + tail).encode())))
def test_arbitrary_bytes_raise_only_file_format_error(data: bytes) -> None:
    with contextlib.suppress(FileFormatError):
        parse_bytes(data)


def test_sniff_recognises_only_the_banner(tmp_path: Path) -> None:
    assert pvlog.sniff(FIXTURE.read_bytes()[:4096])
    assert pvlog.sniff(b'\xef\xbb\xbf"Dynojet Power Vision Log File"\r\n')
    assert not pvlog.sniff(b"Time,RPM\n0,1\n")
