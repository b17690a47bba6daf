"""Dyno CSV exports: one row per time, one column per signal, headers like `(PV) Engine Speed`.

What is detected, and how to override it (a FileMapping, from YAML or a dict, see files.load_mapping):
- Delimiter: tab when the header line has more tabs than commas, else comma.
- Encoding: UTF-8 (with or without byte-order mark) when the whole file decodes as UTF-8, else cp1252.
- Header cells: an optional `(device)` prefix, a name, an optional `(unit)` or `[unit]` suffix; a second row
  made only of unit names (`s, rpm, hp, ...`) is read as the units of the columns.
- Channels: the mapping first, then the known-name table (files.KNOWN_CHANNELS, e.g. `Torque Drum 1` is
  torque, in the unit the header states), then any column whose header names a unit (imported under a slug
  of its name). Anything else is an unknown column: reported in the stats (and by inspect), not
  imported, until the mapping names it.
- Time: the mapping's `time_column`, else a column named Time, Elapsed Time, Timestamp...; its unit is the
  mapping's `time_unit`, else the header's (`Time (s)`, `Time(ms)`) or the units row's. A file that states
  none is refused, naming the column: guessing seconds or milliseconds from the size of the values would
  scale every time by 1000 when wrong.
- Units: a column's unit is the one its header or the units row states; a known name without one is
  imported with its values unchanged under `unknown` (files.KNOWN_CHANNELS), unless the mapping names it.
Bad cells and rows are counted errors with their line numbers (raised in strict mode); blank cells are
missing values, not errors. Rows must be in time order.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from fleetstream.producers.file_parsing import (
    ChannelInfo,
    CsvReader,
    FileFormatError,
    FileSample,
    ParsedFile,
    ParseOptions,
    ParseStats,
    parse_number,
    resolve_channel,
    split_unit,
    strip_device,
    text_encoding,
    unique_channels,
)
from fleetstream.schemas.units import UnknownUnitError, canonical_unit

__all__ = ["EXTENSIONS", "FORMAT", "TIME_HEADERS", "parse", "sniff"]

FORMAT = "csv"
EXTENSIONS = (".csv", ".tsv", ".txt")
TIME_HEADERS = frozenset({"time", "elapsed time", "timestamp", "run time", "sample time", "time stamp"})
TIME_UNITS: dict[str, Literal["s", "ms"]] = {"s": "s", "sec": "s", "seconds": "s", "ms": "ms", "msec": "ms"}
LOOKAHEAD_ROWS = 20
"""Rows buffered to recognise a units row (and to show the first times when their unit is missing)."""


def sniff(head: bytes) -> bool:
    """True for text whose first line is delimited by commas or tabs (any text table; checked after pvlog)."""
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = head.decode("cp1252", errors="replace")
    first = text.splitlines()[0] if text.splitlines() else ""
    return "," in first or "\t" in first


@dataclass(frozen=True)
class _Column:
    index: int
    info: ChannelInfo


def parse(handle: BinaryIO, options: ParseOptions) -> ParsedFile:
    """Read the header (and a units row if present), decide channels and time; stream rows from `samples`."""
    encoding = text_encoding(handle)
    text = io.TextIOWrapper(handle, encoding=encoding, errors="replace", newline="")
    header_line = text.readline()
    delimiter = "\t" if header_line.count("\t") > header_line.count(",") else ","
    reader = csv.reader(itertools.chain([header_line], text), delimiter=delimiter)
    stats = ParseStats(options.label, options.strict)
    rows = _numbered(reader, options.label)
    header = next(rows, None)
    if header is None or not any(cell.strip() for cell in header[1]):
        raise FileFormatError(options.label, 1, "a header row naming the columns", "an empty file", "line")
    lookahead = list(itertools.islice(rows, LOOKAHEAD_ROWS))
    units = _units_row(lookahead)
    if units is not None:
        lookahead.pop(0)
    time_index, time_unit = _time_column(header[1], units, lookahead, options)
    columns = _columns(header[1], units, time_index, options, stats)
    samples = _samples(itertools.chain(lookahead, rows), len(header[1]), time_index, time_unit, columns, stats)
    return ParsedFile(fmt=FORMAT, channels=[column.info for column in columns], samples=samples, stats=stats,
                      metadata={"encoding": encoding, "delimiter": "tab" if delimiter == "\t" else "comma",
                                "time_column": header[1][time_index].strip(), "time_unit": time_unit,
                                "units_row": "yes" if units is not None else "no"})


def _numbered(reader: CsvReader, label: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for every row, turning csv errors into FileFormatError."""
    try:
        for cells in reader:
            yield reader.line_num, cells
    except csv.Error as exc:
        raise FileFormatError(label, reader.line_num, "CSV text", str(exc), "line") from None


def _is_unit(cell: str) -> bool:
    try:
        canonical_unit(cell)
    except UnknownUnitError:
        return False
    return True


def _units_row(lookahead: list[tuple[int, list[str]]]) -> list[str] | None:
    """The first data row when it holds only unit names (and blanks), else None."""
    if not lookahead:
        return None
    cells = [cell.strip() for cell in lookahead[0][1]]
    named = [cell for cell in cells if cell]
    if not named or any(parse_number(cell) is not None for cell in named):
        return None
    return cells if all(_is_unit(cell) for cell in named) else None


def _column_unit(header: str, units: list[str] | None, index: int) -> tuple[str, str, str]:
    """(device, name, unit given by the file or "") of one column."""
    device, rest = strip_device(header)
    name, unit = split_unit(rest)
    if not unit and units is not None and index < len(units):
        unit = units[index]
    return device, name, unit


def _time_column(header: list[str], units: list[str] | None, lookahead: list[tuple[int, list[str]]],
                 options: ParseOptions) -> tuple[int, Literal["s", "ms"]]:
    """The time column and its stated unit; a unit not stated is a FileFormatError, never a guess."""
    index = _find_time_column(header, options)
    _, _, header_unit = _column_unit(header[index], units, index)
    if options.mapping.time_unit is not None:
        return index, options.mapping.time_unit
    if header_unit.lower() in TIME_UNITS:
        return index, TIME_UNITS[header_unit.lower()]
    first = [cells[index].strip() for _, cells in lookahead[:3] if index < len(cells)]
    raise FileFormatError(options.label, 1, f"the unit of time column {header[index].strip()!r} stated (a header "
                          "like 'Time (s)' or 'Time (ms)', a units row, or time_unit: s|ms in the mapping)",
                          f"none (first values {', '.join(first) or 'none'})", "line")


def _find_time_column(header: list[str], options: ParseOptions) -> int:
    wanted = options.mapping.time_column
    for index, cell in enumerate(header):
        if wanted is not None:
            if cell.strip().lower() == wanted.strip().lower():
                return index
        elif split_unit(strip_device(cell)[1])[0].lower() in TIME_HEADERS:
            return index
    expected = f"the time column {wanted!r} named in the mapping" if wanted else \
        "a time column (Time, Time (s), Time(ms), Elapsed Time, Timestamp) or time_column in the mapping"
    shown = ", ".join(repr(cell) for cell in header[:8]) + (", ..." if len(header) > 8 else "")
    raise FileFormatError(options.label, 1, expected, f"columns {shown}", "line")


def _columns(header: list[str], units: list[str] | None, time_index: int, options: ParseOptions,
             stats: ParseStats) -> list[_Column]:
    """The imported columns; unknown ones are recorded in `stats.skipped_columns` (resolve_channel does it)."""
    infos: list[ChannelInfo | None] = []
    for index, cell in enumerate(header):
        if index == time_index or not cell.strip():
            infos.append(None)
            continue
        device, _, unit = _column_unit(cell, units, index)
        infos.append(resolve_channel(cell.strip(), unit, options, stats, device=device, require_known=not unit))
    return [_Column(index, info) for index, info in enumerate(unique_channels(infos, stats)) if info is not None]


def _samples(rows: Iterator[tuple[int, list[str]]], width: int, time_index: int, time_unit: Literal["s", "ms"],
             columns: list[_Column], stats: ParseStats) -> Iterator[FileSample]:
    scale = 1000.0 if time_unit == "s" else 1.0
    last_ms: int | None = None
    for line, cells in rows:
        if not any(cell.strip() for cell in cells):
            continue
        row = stats.rows
        stats.rows += 1
        if len(cells) < width or any(cell.strip() for cell in cells[width:]):
            stats.row_error(line, f"{width} fields (as in the header)", f"{len(cells)}")
            continue
        time_value = parse_number(cells[time_index])
        if time_value is None:
            stats.row_error(line, f"a time in column {time_index + 1}", repr(cells[time_index]))
            continue
        time_ms = round(time_value * scale)
        if last_ms is not None and time_ms < last_ms:
            stats.row_error(line, f"time >= {last_ms} ms (rows in time order)", f"{time_ms} ms")
            continue
        last_ms = time_ms
        yield from _row_samples(row, line, time_ms, cells, columns, stats)


def _row_samples(row: int, line: int, time_ms: int, cells: list[str], columns: list[_Column],
                 stats: ParseStats) -> Iterator[FileSample]:
    for column in columns:
        cell = cells[column.index].strip()
        if not cell:
            continue
        value = parse_number(cell)
        if value is None:
            stats.row_error(line, f"a number in column {column.index + 1} ({column.info.source_name!r})", repr(cell))
            continue
        stats.samples += 1
        info = column.info
        yield FileSample(row, info.channel, info.unit, time_ms, info.convert(value))
