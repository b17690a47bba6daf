"""The shared import machinery: records that match the Avro contract, stable identities, detection, start times,
mappings, the demo samples, and `inspect` over every registered format."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import fastavro
import pytest

from fleetstream.producers import files
from fleetstream.producers.files import FileFormatError, detect_format, file_identity, import_file
from fleetstream.producers.inspection import inspect, inspectors, register_inspector
from fleetstream.schemas import codec, registry
from tests.data.files import make_files

SAMPLES = Path(files.__file__).parent / "samples"
FIXTURES = make_files.HERE
START_MS = 1_700_000_000_000


def records(path: Path, **kwargs) -> list[dict]:
    kwargs.setdefault("station_id", "cell-7")
    kwargs.setdefault("progress", False)
    return list(import_file(path, **kwargs))


def sample_keys(batches: list[dict]) -> list[tuple[str, int, str]]:
    """What downstream dedup keys on: (station, event time, channel)."""
    return [(b["station_id"], s["timestamp_ms"], b["channel"]) for b in batches for s in b["samples"]]


@pytest.mark.parametrize("name", ["dyno_pull.pvlog", "dyno_pull.wp8", "dyno_pull.csv"])
def test_demo_samples_import_as_valid_dyno_sample_batches(name: str) -> None:
    path = SAMPLES / name
    assert path.stat().st_size < 200_000
    batches = records(path, start_time_ms=START_MS)
    schema = registry.latest("dyno_sample_batch").parsed
    for batch in batches:
        assert fastavro.validation.validate(batch, schema, strict=True)
        assert codec.decode(codec.encode("dyno_sample_batch", batch), "dyno_sample_batch") == batch
    assert {b["source"] for b in batches} == {path.suffix.lstrip(".")}
    assert {"engine_speed", "power", "torque", "afr", "map", "iat", "tps"} <= {b["channel"] for b in batches}


def test_demo_wp8_mapping_names_every_unit_the_file_does_not_declare_for_certain() -> None:
    path = SAMPLES / "dyno_pull.wp8"
    plain = {b["channel"]: b["unit"] for b in records(path, start_time_ms=START_MS)}
    mapped = {b["channel"]: b["unit"] for b in records(path, start_time_ms=START_MS,
                                                       mapping=SAMPLES / "dyno_pull.wp8.mapping.yaml")}
    assert {c for c, unit in plain.items() if unit.startswith("unknown")} == {
        "engine_speed", "power", "torque", "force", "map", "tps", "humidity"}
    assert mapped == {"engine_speed": "rpm", "power": "hp", "torque": "ft-lb", "speed": "mph", "force": "lbf",
                      "afr": "AFR", "map": "kPa", "iat": "degF", "tps": "%", "humidity": "%"}


def test_the_same_file_at_another_start_time_is_another_run() -> None:
    """Placed at another start time the samples differ, so the ids must too: equal ids with other content would
    be dead-lettered downstream as a batch-id conflict."""
    path = FIXTURES / "pull.pvlog"
    first = records(path, start_time_ms=START_MS)
    later = records(path, start_time_ms=START_MS + 3_600_000)
    assert not {b["batch_id"] for b in first} & {b["batch_id"] for b in later}


@pytest.mark.parametrize("name", ["pull.pvlog", "run.wp8", "ecu_log.wp8", "pull.csv"])
def test_reimport_gives_identical_batch_ids_and_sample_keys(name: str, tmp_path: Path) -> None:
    original = FIXTURES / name
    first = records(original, start_time_ms=START_MS, batch_samples=37)
    again = records(original, start_time_ms=START_MS, batch_samples=37)
    copy = tmp_path / f"renamed{original.suffix}"
    shutil.copyfile(original, copy)
    from_copy = records(copy, start_time_ms=START_MS, batch_samples=37)
    assert first == again
    assert [b["batch_id"] for b in from_copy] == [b["batch_id"] for b in first]
    assert sample_keys(from_copy) == sample_keys(first)
    assert len(set(sample_keys(first))) == len(sample_keys(first))  # no two samples share a key
    assert len({b["batch_id"] for b in first}) == len(first)


def test_batches_are_per_channel_in_row_order_with_stable_ids() -> None:
    path = FIXTURES / "pull.pvlog"
    file_id = file_identity(path)
    batches = records(path, start_time_ms=START_MS, batch_samples=40)
    per_channel: dict[str, list[dict]] = defaultdict(list)
    for batch in batches:
        assert batch["run_id"] == file_id and batch["provider"] == "pull.pvlog" and batch["station_id"] == "cell-7"
        assert 1 <= len(batch["samples"]) <= 40
        per_channel[batch["channel"]].append(batch)
    rpm = per_channel["engine_speed"]
    assert [b["batch_id"] for b in rpm] == [f"{file_id}:{START_MS}:engine_speed:{row}" for row in (0, 40, 80)]
    assert [len(b["samples"]) for b in rpm] == [40, 40, 21]
    times = [s["timestamp_ms"] for b in rpm for s in b["samples"]]
    assert times == sorted(times) and times[0] == START_MS and times[-1] == START_MS + 2000
    iat = per_channel["iat"]
    assert [b["batch_id"] for b in iat] == [f"{file_id}:{START_MS}:iat:0"]  # 11 samples, rows 0, 10, ... 100


def test_file_identity_is_the_sha256_of_the_content(tmp_path: Path) -> None:
    import hashlib

    path = FIXTURES / "run.wp8"
    assert file_identity(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    changed = tmp_path / "run.wp8"
    changed.write_bytes(path.read_bytes() + b"\x00")
    assert file_identity(changed) != file_identity(path)


def test_start_time_precedence(tmp_path: Path) -> None:
    run = FIXTURES / "run.wp8"
    from_file = import_file(run, station_id="s", progress=False)
    first = next(from_file)
    assert from_file.start_time_source == "file" and first["samples"][0]["timestamp_ms"] == make_files.RUN_TIME_MS
    overridden = import_file(run, station_id="s", start_time_ms=START_MS, progress=False)
    assert next(overridden)["samples"][0]["timestamp_ms"] == START_MS and overridden.start_time_source == "argument"

    log = tmp_path / "pull.pvlog"
    shutil.copyfile(FIXTURES / "pull.pvlog", log)
    os.utime(log, ns=(START_MS * 1_000_000, 1_650_000_000_123 * 1_000_000))
    by_mtime = import_file(log, station_id="s", progress=False)
    assert next(by_mtime)["samples"][0]["timestamp_ms"] == 1_650_000_000_123
    assert by_mtime.start_time_source == "mtime"


def test_format_is_detected_by_content_not_extension(tmp_path: Path) -> None:
    for fixture, fmt in (("pull.pvlog", "pvlog"), ("run.wp8", "wp8"), ("pull.csv", "csv")):
        disguised = tmp_path / f"{fmt}.dat"
        shutil.copyfile(FIXTURES / fixture, disguised)
        assert detect_format(disguised) == fmt
    pvlog_named_csv = tmp_path / "export.csv"
    shutil.copyfile(FIXTURES / "pull.pvlog", pvlog_named_csv)
    assert detect_format(pvlog_named_csv) == "pvlog"


def test_unrecognised_binary_uses_the_extension_to_explain(tmp_path: Path) -> None:
    binary = b"\x00\x01\x02\x03binary\xff"
    pvlog = tmp_path / "run.pvlog"
    pvlog.write_bytes(binary)
    with pytest.raises(FileFormatError, match=r"run.pvlog: line 1: expected first line 'Dynojet Power Vision Log "
                                              r"File': the Power Vision text layout .* is the only"):
        records(pvlog)
    unknown = tmp_path / "mystery.bin"
    unknown.write_bytes(binary)
    with pytest.raises(FileFormatError, match=r"mystery.bin: byte 0: expected a WinPEP 8 run .* found bytes 00 01"):
        records(unknown)


def test_strict_import_raises_and_lenient_import_counts(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Time (ms),RPM\n0,2500\n10,oops\n20,2600\n", encoding="utf-8")
    lenient = import_file(path, station_id="s", start_time_ms=0, progress=False)
    assert [s["value"] for b in lenient for s in b["samples"]] == [2500.0, 2600.0]
    assert lenient.stats.errors == 1 and lenient.stats.issues[0].where == "line 3"
    with pytest.raises(FileFormatError, match=r"bad.csv: line 3: expected a number"):
        records(path, strict=True)


def test_mapping_from_yaml(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text('columns:\n  "(DWRT CPU) Correction Factor": {channel: correction_factor, unit: ratio}\n'
                       '  "(PV) Throttle Position": skip\n', encoding="utf-8")
    channels = {b["channel"] for b in records(FIXTURES / "pull.csv", mapping=mapping, start_time_ms=0)}
    assert "correction_factor" in channels and "tps" not in channels


def test_bad_mapping_is_rejected_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown unit 'furlongs'"):
        files.load_mapping({"columns": {"X": {"channel": "x", "unit": "furlongs"}}})
    with pytest.raises(ValueError, match=r"mapping: column 'X': expected \{channel, unit\} or skip"):
        files.load_mapping({"columns": {"X": 3}})


def test_progress_bar_is_off_when_stderr_is_not_a_tty(capfd: pytest.CaptureFixture[str]) -> None:
    list(import_file(SAMPLES / "dyno_pull.wp8", station_id="s", progress=True))
    # Only the bar is asserted absent: a client of an earlier test may still log to the same stderr.
    assert "%|" not in capfd.readouterr().err  # tqdm's bar (the file's unit warnings may name it on stderr)


def test_batch_samples_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_samples"):
        import_file(FIXTURES / "run.wp8", station_id="s", batch_samples=0)


def test_error_message_shape() -> None:
    error = FileFormatError("run.wp8", 9, "TLV tag 0x1000 or 0xFFFF", "0x2a01")
    assert str(error) == "run.wp8: byte 9: expected TLV tag 0x1000 or 0xFFFF, found 0x2a01"
    assert (error.path, error.position, error.where) == ("run.wp8", 9, "byte")


def test_checked_in_files_are_what_the_generator_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(make_files, "HERE", tmp_path / "fixtures")
    monkeypatch.setattr(make_files, "SAMPLES", tmp_path / "samples")
    (tmp_path / "fixtures").mkdir()
    make_files.main()
    for name in ("pull.pvlog", "run.wp8", "ecu_log.wp8", "pull.csv"):
        assert (tmp_path / "fixtures" / name).read_bytes() == (FIXTURES / name).read_bytes(), name
    for name in ("dyno_pull.pvlog", "dyno_pull.wp8", "dyno_pull.csv"):
        assert (tmp_path / "samples" / name).read_bytes() == (SAMPLES / name).read_bytes(), name


# --- inspect ---------------------------------------------------------------------------------------------------


def test_inspect_wp8_run() -> None:
    report = inspect(SAMPLES / "dyno_pull.wp8")
    assert report.format == "wp8" and report.ok and report.record_kind == "data points"
    assert report.file_id == file_identity(SAMPLES / "dyno_pull.wp8")
    assert report.start_time_ms == make_files.RUN_TIME_MS and report.span_ms == (0, 8000)
    rpm = next(c for c in report.channels if c.channel == "engine_speed")
    assert (rpm.unit, rpm.samples, rpm.min, rpm.max) == ("unknown(code=8,sub=1)", 801, 2500.0, 6500.0)
    afr = next(c for c in report.channels if c.channel == "afr")
    assert afr.unit == "AFR" and 12.5 < (afr.min or 0) < (afr.max or 0) < 13.7
    assert report.warning_count == 7  # one per channel whose unit the file does not declare for certain
    text = report.to_text()
    assert "note at byte 8: 'Engine Speed': unit not known for certain" in text
    assert "dyno_serial: 250iX-41873" in text and "engine_speed" in text and "2024-05-14T10:32:00" in text
    assert report.to_dict()["channels"][0]["channel"] == "engine_speed"


def test_inspect_lists_unknown_columns_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Time (ms),RPM,Mystery\n0,2500,1\n10,x,2\n20,2600,3\n", encoding="utf-8")
    report = inspect(path)
    assert report.format == "csv" and not report.ok and report.error_count == 1
    assert report.skipped == ["Mystery"] and report.records == 3
    assert "error at line 3: expected a number in column 2 ('RPM'), found 'x'" in report.to_text()
    assert "not imported: Mystery" in report.to_text()


def test_inspect_reports_a_structural_error_with_its_offset(tmp_path: Path) -> None:
    data = bytearray((FIXTURES / "ecu_log.wp8").read_bytes())
    last_row = len(data) - 22
    data[last_row + 1] = 0x20  # row tag 0x1003 -> 0x2003
    path = tmp_path / "broken.wp8"
    path.write_bytes(bytes(data))
    report = inspect(path)
    assert report.fatal is not None and report.fatal.startswith(f"{path}: byte {last_row}: ")
    assert report.records == 40 and not report.ok and "STOPPED" in report.to_text()


def test_inspect_reports_a_file_cut_short_with_what_was_kept(tmp_path: Path) -> None:
    path = tmp_path / "cut.wp8"
    data = (FIXTURES / "ecu_log.wp8").read_bytes()
    path.write_bytes(data[:-3])
    report = inspect(path)
    assert report.fatal is None and not report.ok and report.records == 40 and report.error_count == 1
    assert f"error at byte {len(data) - 22}: expected a complete row" in report.to_text()


def test_inspect_jetdrive_capture() -> None:
    capture = Path(__file__).parents[1] / "data" / "jetdrive" / "sim_pull.pcap"
    report = inspect(capture)
    assert report.format == "jetdrive" and report.ok
    assert report.records == 52 and report.counters["messages.ChannelValues"] == 50
    assert report.counters.get("sequence_gaps", 0) == 0
    assert list(report.metadata.values()) == ["Dynojet Dyno CPU"]
    rpm = next(c for c in report.channels if c.channel == "engine_speed")
    assert rpm.samples == 50 and rpm.unit == "rpm"
    power = next(c for c in report.channels if c.channel == "power")
    assert power.unit == "hp" and power.file_unit == "kW"


def test_inspect_registry_accepts_new_formats(tmp_path: Path) -> None:
    path = tmp_path / "capture.mts"
    path.write_bytes(b"\xb2\x82\x43\x13\x03\x2c")

    def inspect_mts(location: Path):
        from fleetstream.producers.inspection import InspectReport
        return InspectReport(str(location), "mts-test", location.stat().st_size, file_identity(location), records=1)

    register_inspector("mts-test", inspect_mts, sniff=lambda head: head[:2] == b"\xb2\x82")
    try:
        assert "mts-test" in inspectors()
        assert inspect(path).format == "mts-test"
    finally:
        from fleetstream.producers import inspection as module
        module._REGISTRY.pop("mts-test")


def test_inspect_innovate_capture_with_junk(tmp_path: Path) -> None:
    from fleetstream.producers import innovate

    def packet(function_code: int, lambda_value: float, aux: int) -> bytes:
        raw = innovate.lambda_to_raw(lambda_value) if function_code == 0 else 500
        words = [*innovate.encode_wideband(function_code, raw, 147), innovate.encode_aux(aux)]
        return innovate.encode_packet(words)

    contract_example = innovate.encode_packet(innovate.encode_wideband(0, innovate.lambda_to_raw(0.928), 147))
    assert contract_example == bytes.fromhex("B2824313032C")
    capture = tmp_path / "session.isp2"
    pull = b"".join(packet(0, 0.85 + i / 100, 100 + i) for i in range(10))
    capture.write_bytes(b"\x00\xff" + packet(4, 0, 10) + pull)
    report = inspect(capture)
    assert report.format == "mts" and report.records == 11
    assert report.counters["resyncs"] == 1 and report.counters["skipped_bytes"] == 2
    assert report.counters["sensor1.function.4.warming_up"] == 1 and report.counters["sensor1.function.0.ok"] == 10
    lam = next(c for c in report.channels if c.channel == "lambda")
    afr = next(c for c in report.channels if c.channel == "afr")
    assert (lam.samples, lam.min, lam.max) == (10, 0.85, 0.94)
    assert afr.min == pytest.approx(0.85 * 14.7) and afr.max == pytest.approx(0.94 * 14.7)
    aux = next(c for c in report.channels if c.channel == "aux_1")
    assert (aux.min, aux.max) == (10.0, 109.0)
    assert any(issue.where == "byte 0" and "junk" in issue.message for issue in report.issues)
