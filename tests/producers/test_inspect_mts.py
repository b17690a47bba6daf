"""`inspect` on real Innovate MTS captures: detection behind junk, swapped bytes, and what counts as an error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fleetstream.producers.files import FileFormatError
from fleetstream.producers.inspection import inspect, looks_byte_swapped_mts, looks_like_mts

CAPTURES = Path(__file__).parents[1] / "data" / "innovate"


def swab(data: bytes) -> bytes:
    """Every 16-bit word's two bytes swapped, as a little-endian dump of the serial words would hold them."""
    even = data[: len(data) // 2 * 2]
    return b"".join(even[i + 1:i + 2] + even[i:i + 1] for i in range(0, len(even), 2))


def junk(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize(("name", "packets", "note"), [
    ("Serial-log.isp2", 347, "a text line after the last packet"),
    ("NoStart.TXT", 1157, "2 bytes before the first packet"),
    ("mts-ssi-4-192.asc", 42, None),
])
def test_real_captures_are_not_failures(name: str, packets: int, note: str | None) -> None:
    report = inspect(CAPTURES / name)
    assert report.format == "mts" and report.records == packets
    assert report.ok and report.error_count == 0
    notes = [issue.message for issue in report.issues if not issue.error]
    if note is None:
        assert not notes
    else:
        assert len(notes) == 1 and note in notes[0]


def test_trailing_text_line_is_quoted_in_its_note() -> None:
    report = inspect(CAPTURES / "Serial-log.isp2")
    assert "Logging Stopped" in report.to_text() and "error at" not in report.to_text()


def test_damage_between_packets_is_still_an_error(tmp_path: Path) -> None:
    data = bytearray((CAPTURES / "Serial-log.isp2").read_bytes())
    data[2000:2000] = b"\x00\x01\x02"  # bytes lost in the middle of the capture
    damaged = tmp_path / "damaged.isp2"
    damaged.write_bytes(bytes(data))
    report = inspect(damaged)
    assert not report.ok and report.error_count >= 1
    assert any(issue.error and issue.where.startswith("byte 20") for issue in report.issues)


def test_trailing_binary_junk_is_still_an_error(tmp_path: Path) -> None:
    capture = tmp_path / "tail.isp2"
    capture.write_bytes((CAPTURES / "mts-ssi-4-192.asc").read_bytes() + b"\x00\x01\x02\x03\x04")
    assert inspect(capture).error_count == 1


@pytest.mark.parametrize("leading", [65, 300, 1000, 3000])
def test_capture_behind_more_than_64_bytes_of_junk_is_detected(tmp_path: Path, leading: int) -> None:
    capture = tmp_path / "capture.bin"  # no extension to go by
    capture.write_bytes(junk(leading, seed=leading) + (CAPTURES / "Serial-log.isp2").read_bytes())
    report = inspect(capture)
    # random junk may hold a packet look-alike, which the decoder takes as it would live: not an error either
    assert report.format == "mts" and report.ok and report.counters["data_packets"] >= 347
    assert f"{leading} bytes before the first packet" in report.issues[0].message


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_not_taken_for_a_capture(seed: int) -> None:
    head = junk(4096, seed)
    assert not looks_like_mts(head) and not looks_byte_swapped_mts(head)


@pytest.mark.parametrize("shift", [0, 1])
def test_byte_swapped_capture_gets_a_hint(tmp_path: Path, shift: int) -> None:
    swapped = tmp_path / "swapped.bin"
    swapped.write_bytes(b"\x00" * shift + swab((CAPTURES / "NoStart.TXT").read_bytes()[2:]))
    with pytest.raises(FileFormatError) as unrecognised:
        inspect(swapped)
    assert "swapped" in unrecognised.value.hint and "mts" in str(unrecognised.value)
    forced = inspect(swapped, "mts")
    assert not forced.ok and forced.fatal is not None and "swapped" in forced.fatal


def test_unrecognised_file_lists_every_format_and_the_format_option(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(junk(500, seed=1))
    with pytest.raises(FileFormatError, match="jetdrive, mts") as unrecognised:
        inspect(path)
    assert "--format" in unrecognised.value.hint
