"""Power Vision logs: the documented text layout ("Pro-XY CSV"), whatever the file's extension.

Layout (contract: hardware-formats.md, Power Vision)::

    Dynojet Power Vision Log File                         (quoted or not)
    "Format:","Pro-XY CSV 1.0.0"
    1,"driver","id","Engine Speed","rpm","description","color"     one line per signal
    ...
                                                          blank line
    "Time(ms)","Signal","Value"
    0,1,2500                                              long rows: time_ms, signal index, value
    0,2,86.5

What is emitted: only observed values. A row `t,i,v` becomes one sample of signal i at t ms; signals are
not carried forward into samples, because a repeated value would claim a measurement that was never made
(and multiply the samples of slow signals by the rate of fast ones). The pivot, one row per time with every
signal carried forward from its last observation, is what a person reading the log expects: `pivot()` and
`write_pivot_csv()` offer it for inspection and CSV export.

Rows must be in time order; a row whose signal index is not declared, or whose numbers do not parse, is a
counted error (raised in strict mode). A second value of one signal at one time is skipped with a warning.
No public description of a binary .pvlog exists: anything but this text layout is rejected, saying so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from fleetstream.producers.file_parsing import (
    SNIFF_BYTES,
    ChannelInfo,
    CsvReader,
    FileFormatError,
    FileSample,
    ParsedFile,
    ParseOptions,
    ParseStats,
    first_line,
    parse_number,
    resolve_channel,
    text_encoding,
    unique_channels,
)

__all__ = ["EXTENSIONS", "FORMAT", "MAGIC_LINE", "parse", "pivot", "sniff", "write_pivot_csv"]

FORMAT = "pvlog"
EXTENSIONS = (".pvlog",)
MAGIC_LINE = "Dynojet Power Vision Log File"
FORMAT_PREFIX = "Pro-XY CSV 1."
DATA_HEADER = ["Time(ms)", "Signal", "Value"]
SUPPORTED = "the Power Vision text layout (first line 'Dynojet Power Vision Log File', Format 'Pro-XY CSV 1.x')"


def sniff(head: bytes) -> bool:
    """True when the first non-blank line is the Power Vision banner."""
    return first_line(head) == MAGIC_LINE


def parse(handle: BinaryIO, options: ParseOptions) -> ParsedFile:
    """Read the header (format line, signal table) now; stream the long rows from `samples`."""
    head = handle.read(SNIFF_BYTES)
    if not sniff(head):
        raise FileFormatError(options.label, 1, f"first line {MAGIC_LINE!r}: {SUPPORTED} is the only Power Vision "
                              "layout supported", _describe(head), "line")
    encoding = text_encoding(handle)
    text = io.TextIOWrapper(handle, encoding=encoding, errors="replace", newline="")
    reader = csv.reader(text)
    stats = ParseStats(options.label, options.strict)
    try:
        version, channels = _read_header(reader, options, stats)
    except csv.Error as exc:
        raise FileFormatError(options.label, reader.line_num, "CSV text", str(exc), "line") from None
    by_index = dict(zip(channels, unique_channels(list(channels.values()), stats), strict=True))
    return ParsedFile(fmt=FORMAT, channels=[info for info in by_index.values() if info is not None],
                      samples=_samples(reader, by_index, stats), stats=stats,
                      metadata={"format": version, "encoding": encoding, "signals": str(len(channels))})


def _describe(head: bytes) -> str:
    if not head:
        return "an empty file"
    if b"\0" in head[:256] or not first_line(head):
        return f"binary data (bytes {head[:8].hex(' ')})"
    line = first_line(head)
    return repr(line[:60] + ("..." if len(line) > 60 else ""))


def _read_header(reader: CsvReader, options: ParseOptions,
                 stats: ParseStats) -> tuple[str, dict[int, ChannelInfo | None]]:
    """Banner, format line, signal lines, up to and including the `"Time(ms)","Signal","Value"` header."""
    label = options.label
    version = ""
    signals: dict[int, ChannelInfo | None] = {}
    line = 0
    for row in reader:
        line = reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0] == MAGIC_LINE:
            continue
        if cells[0] == "Format:":
            version = _check_version(cells, label, line)
        elif cells[:3] == DATA_HEADER:
            if not version:
                raise FileFormatError(label, line, 'a "Format:","Pro-XY CSV 1.0.0" line before the data', "none",
                                      "line")
            return version, signals
        elif not version:
            raise FileFormatError(label, line, '"Format:","Pro-XY CSV 1.0.0" after the banner', repr(row), "line")
        else:
            index, info = _signal(cells, options, stats, line)
            if index in signals:
                raise FileFormatError(label, line, "each signal index declared once", f"index {index} again",
                                      "line")
            signals[index] = info
    raise FileFormatError(label, line + 1, 'the "Time(ms)","Signal","Value" header', "end of file", "line")


def _check_version(cells: list[str], label: str, line: int) -> str:
    version = cells[1] if len(cells) > 1 else ""
    if not version.startswith(FORMAT_PREFIX):
        raise FileFormatError(label, line, f"format {FORMAT_PREFIX}x ({SUPPORTED})", repr(version), "line")
    return version


def _signal(cells: list[str], options: ParseOptions, stats: ParseStats, line: int) -> tuple[int, ChannelInfo | None]:
    """One `index,"driver","id","name","units","description","color"` line."""
    if len(cells) < 5 or not cells[0].isdigit():
        raise FileFormatError(options.label, line, 'a signal line index,"driver","id","name","units",'
                              '"description","color" or the "Time(ms)","Signal","Value" header', repr(cells), "line")
    index, driver, name, units = int(cells[0]), cells[1], cells[3], cells[4]
    return index, resolve_channel(name, units, options, stats, device=driver, position=line)


def _samples(reader: CsvReader, signals: dict[int, ChannelInfo | None],
             stats: ParseStats) -> Iterator[FileSample]:
    try:
        yield from _rows(reader, signals, stats)
    except csv.Error as exc:
        raise FileFormatError(stats.label, reader.line_num, "CSV text", str(exc), "line") from None


def _rows(reader: CsvReader, signals: dict[int, ChannelInfo | None],
          stats: ParseStats) -> Iterator[FileSample]:
    """Long rows to samples; `row` counts distinct times (the pivot row index), so it is stable and dense."""
    row = -1
    last_time_ms: int | None = None
    seen_at_time: set[int] = set()
    for cells in reader:
        if not cells or not any(cell.strip() for cell in cells):
            continue
        line = reader.line_num
        parsed = _parse_row(cells, signals, stats, line)
        if parsed is None:
            continue
        time_ms, index, value = parsed
        if last_time_ms is not None and time_ms < last_time_ms:
            stats.row_error(line, f"time >= {last_time_ms} ms (rows in time order)", f"{time_ms} ms")
            continue
        if time_ms != last_time_ms:
            row, last_time_ms = row + 1, time_ms
            seen_at_time.clear()
            stats.rows += 1
        if index in seen_at_time:
            stats.warn(line, f"second value of signal {index} at {time_ms} ms skipped")
            continue
        seen_at_time.add(index)
        info = signals[index]
        if info is not None:
            stats.samples += 1
            yield FileSample(row, info.channel, info.unit, time_ms, info.convert(value))


def _parse_row(cells: list[str], signals: dict[int, ChannelInfo | None], stats: ParseStats,
               line: int) -> tuple[int, int, float] | None:
    if len(cells) != 3:
        stats.row_error(line, "3 fields time_ms,signal,value", f"{len(cells)} fields {cells!r}")
        return None
    time_ms = parse_number(cells[0])
    if time_ms is None or time_ms < 0:
        stats.row_error(line, "a time in ms >= 0", repr(cells[0]))
        return None
    index_text = cells[1].strip()
    if not index_text.isdigit() or int(index_text) not in signals:
        stats.row_error(line, f"a signal index declared in the header ({_indexes(signals)})", repr(cells[1]))
        return None
    value = parse_number(cells[2])
    if value is None:
        stats.row_error(line, f"a number for signal {index_text}", repr(cells[2]))
        return None
    return round(time_ms), int(index_text), value


def _indexes(signals: dict[int, ChannelInfo | None]) -> str:
    indexes = sorted(signals)
    if not indexes:
        return "none declared"
    return f"{indexes[0]}..{indexes[-1]}" if len(indexes) > 3 else ", ".join(map(str, indexes))


def pivot(parsed: ParsedFile) -> Iterator[tuple[int, list[float | None]]]:
    """One row per time: (time_ms, values in `parsed.channels` order), each carried forward.

    Carried forward means: a signal's value in a row is the last one observed at or before that time, or
    None before its first observation. This is a view for people; samples sent to Kafka stay as observed.
    Works for any row-ordered parse (pvlog, CSV, WinPEP 8 ECU logs), not for column-wise dyno runs.
    """
    columns = {info.channel: position for position, info in enumerate(parsed.channels)}
    current: list[float | None] = [None] * len(columns)
    row_time_ms: int | None = None
    row = None
    for sample in parsed.samples:
        if row is not None and sample.row != row and row_time_ms is not None:
            yield row_time_ms, list(current)
        row, row_time_ms = sample.row, sample.timestamp_ms
        current[columns[sample.channel]] = sample.value
    if row_time_ms is not None:
        yield row_time_ms, list(current)


def write_pivot_csv(parsed: ParsedFile, out: TextIO) -> int:
    """Write the carried-forward pivot as CSV (`time_ms` then `channel (unit)` columns); returns rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time_ms", *(f"{info.channel} ({info.unit})" for info in parsed.channels)])
    rows = 0
    for time_ms, values in pivot(parsed):
        writer.writerow([time_ms, *("" if value is None else f"{value:g}" for value in values)])
        rows += 1
    return rows
