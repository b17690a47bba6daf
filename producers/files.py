"""File imports: Power Vision logs, WinPEP 8 runs and dyno CSV exports as dyno_sample_batch records.

Every file format is a parser module (`producers/pvlog.py`, `producers/wp8.py`, `producers/csvimport.py`)
with the same three names: `FORMAT`, `sniff(head) -> bool` and `parse(handle, label, options) -> ParsedFile`.
A parser reads an open binary file as a stream and yields `FileSample`s (row, canonical channel, canonical
unit, time in ms from the start of the file, value); this module turns them into Kafka records.

Identity, and why re-imports are idempotent:
    The file identity is the SHA-256 of the file's bytes (hex), computed in one streaming pass before
    parsing. `run_id` is that identity and every batch is named `f"{file_id}:{start_time_ms}:{channel}:{first_row}"`,
    so importing the same bytes at the same start time again (under any name, from any machine) yields exactly the
    same batch ids, and the same samples (the same file placed at another start time is another run, with other
    sample times, so it gets other ids rather than a conflict with the first); downstream dedup on batch id and
    on (station, event time, channel) then drops the repeats.

Time:
    Files carry relative time (ms from the start of the log). The absolute event time of a sample is
    `start_time_ms + relative ms`, where the start time is, in order of precedence:
    1. the `start_time_ms` argument (use it when the file was copied: a copy has a new mtime);
    2. a start time recorded in the file itself (WinPEP 8 dyno runs: the run time, field 19, a FILETIME);
    3. the file's modification time, in ms since the epoch (a log is written as it is recorded, so its mtime
       is near the end of the recording; it is the best the other formats offer).
    Sample keys depend on the start time, so re-imports are only key-identical when the start time is too:
    always true for 1 and 2, and true for 3 as long as the file is the same file on disk.

Batches:
    Samples are grouped per channel, in row order, `batch_samples` per record; a channel's last batch may be
    shorter. Only samples observed in the file are emitted: nothing is interpolated or carried forward.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol

import yaml
from tqdm import tqdm

from fleetstream.errors import FleetstreamError
from fleetstream.schemas.units import UNKNOWN_UNIT, UnknownUnitError, canonical_unit, is_unknown_unit, to_canonical

__all__ = [
    "ChannelInfo",
    "ColumnMapping",
    "CsvReader",
    "FileFormatError",
    "FileImport",
    "FileMapping",
    "FileSample",
    "ImportLedger",
    "Issue",
    "ParseOptions",
    "ParseStats",
    "ParsedFile",
    "detect_format",
    "file_identity",
    "import_file",
    "load_mapping",
]

log = logging.getLogger(__name__)

SNIFF_BYTES = 4096
"""How much of the start of a file format detection looks at."""

ISSUES_KEPT = 200
"""Issues kept with their positions; beyond that only counted, so a broken 1 GB file cannot exhaust memory."""

Where = Literal["byte", "line"]


class FileFormatError(FleetstreamError, ValueError):
    """A file is not what its format says: names the file, the byte offset or line, what was expected and found.

    Example: `run.wp8: byte 9: expected TLV tag 0x1000 or 0xFFFF, found 0x2a01`.
    """

    def __init__(self, path: str | os.PathLike[str], position: int, expected: str, found: str,
                 where: Where = "byte", hint: str = ""):
        self.path = str(path)
        self.position = position
        self.where = where
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}: {where} {position}: expected {expected}, found {found}", hint)


class FileSample(NamedTuple):
    """One observed value: its row (or data-point index), canonical channel and unit, ms from file start."""

    row: int
    channel: str
    unit: str
    timestamp_ms: int
    value: float


@dataclass(frozen=True)
class ChannelInfo:
    """How one signal or column of a file becomes a canonical channel."""

    source_name: str
    """The name as the file spells it, e.g. `(PV) Engine Speed` or `Air/Fuel Ratio`."""
    channel: str
    """Canonical channel name, unique within the file, e.g. `engine_speed`."""
    unit: str
    """Canonical unit the values are converted to, or an unknown-unit marker (values kept as in the file)."""
    file_unit: str
    """Unit the file's values are in (an unknown-unit marker when the file does not say it for certain)."""
    device: str = ""
    """Device or module the file attributes the signal to, when it says."""

    def convert(self, value: float) -> float:
        """A file value in canonical units; unchanged when its unit is not known (see schemas.units)."""
        return to_canonical(value, self.file_unit)[0]


@dataclass(frozen=True)
class Issue:
    """A problem found in a file, at a position (`line 12`, `byte 345`)."""

    where: str
    message: str
    error: bool = True
    """False for notes: skipped columns, unknown unit codes, guessed time units."""


@dataclass
class ParseStats:
    """What a parse saw: rows or data points, samples, and the problems found (first `ISSUES_KEPT` kept)."""

    label: str
    strict: bool = False
    rows: int = 0
    samples: int = 0
    errors: int = 0
    warnings: int = 0
    issues: list[Issue] = field(default_factory=list)
    skipped_columns: list[str] = field(default_factory=list)
    """Source names not imported (unknown header, unknown unit, or skipped by the mapping)."""

    def row_error(self, position: int, expected: str, found: str, where: Where = "line") -> None:
        """A bad row: raise in strict mode, else count it and keep going."""
        if self.strict:
            raise FileFormatError(self.label, position, expected, found, where)
        self.errors += 1
        self._keep(Issue(f"{where} {position}", f"expected {expected}, found {found}"))

    def warn(self, position: int, message: str, where: Where = "line") -> None:
        """Something the import works around; never fatal."""
        self.warnings += 1
        self._keep(Issue(f"{where} {position}", message, error=False))

    def skip_column(self, source_name: str, reason: str, position: int = 1, where: Where = "line") -> None:
        self.skipped_columns.append(source_name)
        self.warn(position, f"{source_name!r} not imported: {reason}", where)

    def _keep(self, issue: Issue) -> None:
        if len(self.issues) < ISSUES_KEPT:
            self.issues.append(issue)


@dataclass(frozen=True)
class ColumnMapping:
    """Where a source column or signal goes: canonical channel name, and the unit the file's values are in."""

    channel: str
    unit: str


@dataclass(frozen=True)
class FileMapping:
    """Overrides for channel detection, for any format; mostly needed for CSV exports with unusual headers.

    `columns` maps a source name (exact, case-insensitive, or without its `(device)` prefix) to a
    ColumnMapping, or to None to skip it. Time settings apply to CSV: the time column's header and its unit.
    """

    columns: Mapping[str, ColumnMapping | None] = field(default_factory=dict)
    time_column: str | None = None
    time_unit: Literal["s", "ms"] | None = None

    def lookup(self, source_name: str) -> tuple[bool, ColumnMapping | None]:
        """(found, mapping): found with None means the mapping says to skip this column."""
        wanted = {source_name.strip().lower(), strip_device(source_name)[1].lower()}
        for key, value in self.columns.items():
            if key.strip().lower() in wanted:
                return True, value
        return False, None


def load_mapping(source: str | os.PathLike[str] | Mapping[str, Any] | FileMapping | None) -> FileMapping:
    """A FileMapping from a YAML file, a dict of the same shape, or None (no overrides).

    YAML shape::

        time_column: "Time (s)"      # optional
        time_unit: s                 # optional, s or ms
        columns:
          "(PV) Engine Speed": {channel: engine_speed, unit: rpm}
          "(DWRT CPU) Torque Drum 1": {channel: torque, unit: ft-lb}
          "Gear": skip               # or null: do not import
          "Accel 1": {channel: accel}  # no unit: imported unchanged as `unknown`
    """
    if source is None:
        return FileMapping()
    if isinstance(source, FileMapping):
        return source
    if isinstance(source, Mapping):
        raw: Any = source
        label = "mapping"
    else:
        label = str(source)
        with open(source, encoding="utf-8") as stream:
            raw = yaml.safe_load(stream) or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{label}: expected a mapping with 'columns', found {type(raw).__name__}")
    return FileMapping(columns=_column_mappings(raw.get("columns") or {}, label),
                       time_column=raw.get("time_column"), time_unit=_time_unit(raw.get("time_unit"), label))


def _column_mappings(raw: Any, label: str) -> dict[str, ColumnMapping | None]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{label}: 'columns' must map header -> {{channel, unit}}, found {type(raw).__name__}")
    columns: dict[str, ColumnMapping | None] = {}
    for header, spec in raw.items():
        if spec is None or spec == "skip":
            columns[str(header)] = None
        elif isinstance(spec, Mapping) and "channel" in spec:
            unit = str(spec.get("unit", UNKNOWN_UNIT))  # a mapping that names no unit claims none
            canonical_unit(unit)  # fail now, naming the unit, rather than on the first row
            columns[str(header)] = ColumnMapping(channel=str(spec["channel"]), unit=unit)
        else:
            raise ValueError(f"{label}: column {header!r}: expected {{channel, unit}} or skip, found {spec!r}")
    return columns


def _time_unit(raw: Any, label: str) -> Literal["s", "ms"] | None:
    if raw is None:
        return None
    if raw in ("s", "ms"):
        return "s" if raw == "s" else "ms"
    raise ValueError(f"{label}: time_unit must be s or ms, found {raw!r}")


@dataclass(frozen=True)
class ParseOptions:
    """What every parser is given besides the file: the name used in errors, overrides, strictness."""

    label: str
    mapping: FileMapping = field(default_factory=FileMapping)
    strict: bool = False


@dataclass
class ParsedFile:
    """A file whose header has been read: its channels are known, its samples stream from `samples`."""

    fmt: str
    channels: list[ChannelInfo]
    samples: Iterator[FileSample]
    stats: ParseStats
    start_time_ms: int | None = None
    """Absolute start of the recording when the file records it (ms since the epoch), else None."""
    metadata: dict[str, str] = field(default_factory=dict)
    """Format-specific facts worth showing: format version, ECU part number, dyno serial, notes..."""


class CsvReader(Protocol):
    """What pvlog and csvimport use of a `csv.reader`: rows, and the physical line number for errors."""

    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class FileParser(Protocol):
    """What a format module provides (producers/pvlog.py, wp8.py, csvimport.py)."""

    @property
    def FORMAT(self) -> str: ...

    @property
    def EXTENSIONS(self) -> tuple[str, ...]: ...

    def sniff(self, head: bytes) -> bool: ...

    def parse(self, handle: BinaryIO, options: ParseOptions) -> ParsedFile: ...


# --- channel naming, shared by the parsers -------------------------------------------------------------------

# Normalised source name -> (canonical channel, the unit the name alone implies). A name implies a unit only
# where the quantity has one unit in use (engine speed in rpm, lambda, battery volts); for every other quantity
# the same name is seen in several units (hp/kW, ft-lb/N-m, AFR/lambda, kPa/psi/bar, degF/degC, mph/km/h, TPS
# in % or V, gear number or ratio...), so a column that does not state its unit is imported with its values
# unchanged under `unknown` and a warning, never in a guessed unit. Channel names match the validation range
# table in fleetstream/config.py.
_UNSTATED = UNKNOWN_UNIT
KNOWN_CHANNELS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("engine speed", "rpm", "engine rpm", "engine_speed"), ("engine_speed", "rpm")),
    **dict.fromkeys(("power", "horsepower", "hp", "engine power", "wheel power"), ("power", _UNSTATED)),
    **dict.fromkeys(("torque", "engine torque", "wheel torque"), ("torque", _UNSTATED)),
    **dict.fromkeys(("air/fuel ratio", "afr", "a/f", "air fuel ratio", "wbo2", "wideband afr"), ("afr", _UNSTATED)),
    **dict.fromkeys(("lambda", "wideband lambda"), ("lambda", "lambda")),
    **dict.fromkeys(("map", "manifold absolute pressure", "manifold pressure", "manifold air pressure"),
                    ("map", _UNSTATED)),
    **dict.fromkeys(("iat", "intake air temp", "intake air temperature", "inlet air temperature"), ("iat", _UNSTATED)),
    **dict.fromkeys(("tps", "tp", "throttle position", "throttle", "throttle position sensor"), ("tps", _UNSTATED)),
    **dict.fromkeys(("speed", "vehicle speed", "vss", "road speed"), ("speed", _UNSTATED)),
    **dict.fromkeys(("force",), ("force", _UNSTATED)),
    **dict.fromkeys(("drum speed", "drum rpm"), ("drum_speed", _UNSTATED)),
    **dict.fromkeys(("engine temp", "et", "coolant temp", "coolant temperature", "ect"), ("coolant_temp", _UNSTATED)),
    **dict.fromkeys(("battery voltage", "b+", "battery", "vbatt"), ("battery_voltage", "V")),
    **dict.fromkeys(("humidity", "relative humidity"), ("humidity", _UNSTATED)),
    **dict.fromkeys(("barometric pressure", "baro", "atmospheric pressure"), ("baro", _UNSTATED)),
    **dict.fromkeys(("air temperature", "ambient temperature", "atmospheric temperature"), ("air_temp", _UNSTATED)),
    **dict.fromkeys(("gear",), ("gear", _UNSTATED)),
}

_DEVICE_PREFIX = re.compile(r"^\s*\(([^)]*)\)\s*")
_UNIT_SUFFIX = re.compile(r"\s*[(\[]([^)\]]*)[)\]]\s*$")
_DRUM_SUFFIX = re.compile(r"\s+drum\s*\d+$")
_NUMBER_SUFFIX = re.compile(r"\s*\d+$")


def strip_device(header: str) -> tuple[str, str]:
    """`(PV) Engine Speed` -> ("PV", "Engine Speed"); no prefix -> ("", header)."""
    match = _DEVICE_PREFIX.match(header)
    if match is None:
        return "", header.strip()
    return match.group(1).strip(), header[match.end():].strip()


def split_unit(name: str) -> tuple[str, str]:
    """`Torque (ft-lbs)` -> ("Torque", "ft-lbs") when the bracketed part is a known unit, else (name, "")."""
    match = _UNIT_SUFFIX.search(name)
    if match is None:
        return name.strip(), ""
    try:
        canonical_unit(match.group(1))
    except UnknownUnitError:
        return name.strip(), ""
    return name[:match.start()].strip(), match.group(1).strip()


def known_channel(name: str) -> tuple[str, str] | None:
    """The canonical channel and the unit its name implies (or `unknown`), from KNOWN_CHANNELS, else None.

    Tries the name as is, then without a `Drum N` suffix, then without a trailing number (`Air/Fuel Ratio 1`):
    several such columns then map to one channel and get `_2`, `_3` suffixes in file order.
    """
    key = " ".join(name.lower().split())
    for candidate in (key, _DRUM_SUFFIX.sub("", key), _NUMBER_SUFFIX.sub("", key)):
        if candidate in KNOWN_CHANNELS:
            return KNOWN_CHANNELS[candidate]
    return None


def slug(name: str) -> str:
    """A channel name for a signal not in KNOWN_CHANNELS: `Spark Advance F` -> `spark_advance_f`."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unnamed"


def resolve_channel(source_name: str, file_unit: str, options: ParseOptions, stats: ParseStats, *,
                    device: str = "", position: int = 1, where: Where = "line",
                    require_known: bool = False) -> ChannelInfo | None:
    """Decide the canonical channel and unit of one source signal, or None (recorded as skipped) if it cannot be.

    Order: the mapping; then the known-name table (the file's unit if it gives one, else the one the name
    implies, which for most names is `unknown`); then, unless `require_known`, a slug of the name with the
    file's unit. Units are checked against schemas.units: a signal in a unit spelling with no canonical
    conversion is skipped and reported; a signal whose unit is not known for certain (an unknown-unit marker,
    schemas.units.unknown_unit) is imported with its values unchanged under that marker, with a warning.
    """
    found, mapped = options.mapping.lookup(source_name)
    if found:
        if mapped is None:
            stats.skip_column(source_name, "skipped by the mapping", position, where)
            return None
        return _channel_info(source_name, mapped.channel, mapped.unit, device, stats, position, where)
    base_name = split_unit(strip_device(source_name)[1])[0]
    known = known_channel(base_name)
    if known is not None:
        return _channel_info(source_name, known[0], file_unit or known[1], device, stats, position, where)
    if require_known:
        stats.skip_column(source_name, "unknown column (add it to the mapping)", position, where)
        return None
    return _channel_info(source_name, slug(base_name), file_unit or UNKNOWN_UNIT, device, stats, position, where)


def _channel_info(source_name: str, channel: str, file_unit: str, device: str, stats: ParseStats,
                  position: int, where: Where) -> ChannelInfo | None:
    if is_unknown_unit(file_unit):
        _warn_unknown_unit(source_name, channel, file_unit, stats, position, where)
        return ChannelInfo(source_name=source_name, channel=channel, unit=file_unit, file_unit=file_unit,
                           device=device)
    try:
        unit = canonical_unit(file_unit)
    except UnknownUnitError:
        stats.skip_column(source_name, f"unit {file_unit!r} has no canonical conversion", position, where)
        return None
    return ChannelInfo(source_name=source_name, channel=channel, unit=unit, file_unit=file_unit, device=device)


def _warn_unknown_unit(source_name: str, channel: str, unit: str, stats: ParseStats, position: int,
                       where: Where) -> None:
    """Once per channel, in the stats (shown by inspect) and the log: its values go out as the file has them."""
    message = (f"{source_name!r}: unit not known for certain, imported as {channel} in {unit} with the file's "
               "values unchanged (a mapping can name its unit)")
    stats.warn(position, message, where)
    log.warning("%s: %s %d: %s", stats.label, where, position, message)


def unique_channels(channels: list[ChannelInfo | None], stats: ParseStats) -> list[ChannelInfo | None]:
    """Give repeated channel names `_2`, `_3`... in file order, so batch ids and sample keys never collide."""
    seen: dict[str, int] = {}
    result: list[ChannelInfo | None] = []
    for info in channels:
        if info is None:
            result.append(None)
            continue
        count = seen.get(info.channel, 0) + 1
        seen[info.channel] = count
        if count > 1:
            renamed = f"{info.channel}_{count}"
            stats.warn(1, f"{info.source_name!r} is a second {info.channel} channel: imported as {renamed}")
            info = ChannelInfo(info.source_name, renamed, info.unit, info.file_unit, info.device)
        result.append(info)
    return result


def parse_number(text: str) -> float | None:
    """A finite float from a file cell, or None: NaN and infinity are as bad as text for a sensor value."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def text_encoding(handle: BinaryIO) -> str:
    """`utf-8-sig` when the whole file decodes as UTF-8 (with or without BOM), else `cp1252`; one streaming pass.

    Rewinds the handle. cp1252 is what Windows dyno software writes when it is not UTF-8.
    """
    handle.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := handle.read(1 << 20):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
        encoding = "utf-8-sig"
    except UnicodeDecodeError:
        encoding = "cp1252"
    handle.seek(0)
    return encoding


def first_line(head: bytes) -> str:
    """The first non-blank line of a file's head as text, BOM and surrounding quotes and spaces removed."""
    text = head.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace")
    for line in text.splitlines():
        if line.strip():
            return line.strip().strip('"').strip()
    return ""


# --- identity, detection, import ------------------------------------------------------------------------------


def file_identity(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the file's content, hex: the run id of an import, the same for every copy of the file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _parsers() -> dict[str, FileParser]:
    # Imported here: the format modules import this one for the shared types.
    from fleetstream.producers import csvimport, pvlog, wp8

    # Order is the detection order: binary magic first, the specific text layout next, generic CSV last.
    modules: list[FileParser] = [wp8, pvlog, csvimport]
    return {module.FORMAT: module for module in modules}


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a file by its content (magic bytes, first line); the extension only breaks ties.

    A file whose content no parser recognises gets the format its extension suggests, so that parser
    rejects it with an error naming the layout it supports; with no such hint, FileFormatError.
    """
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    parsers = _parsers()
    for fmt, parser in parsers.items():
        if parser.sniff(head):
            return fmt
    suffix = Path(path).suffix.lower()
    for fmt, parser in parsers.items():
        if suffix in parser.EXTENSIONS:
            return fmt
    raise FileFormatError(path, 0, "a WinPEP 8 run (FE CE FA CE), a Power Vision log "
                          "('Dynojet Power Vision Log File') or a comma/tab separated CSV export",
                          _describe_head(head), hint="--format names the format when the content does not say it")


def _describe_head(head: bytes) -> str:
    return "an empty file" if not head else f"bytes {head[:8].hex(' ')}"


def parser_for(path: str | os.PathLike[str], fmt: str = "auto") -> FileParser:
    """The parser module for a format name, or the detected one for `auto`."""
    parsers = _parsers()
    name = detect_format(path) if fmt == "auto" else fmt
    if name not in parsers:
        raise ValueError(f"unknown file format {name!r}; known: auto, {', '.join(parsers)}")
    return parsers[name]


class FileImport(Iterator[dict[str, Any]]):
    """One import of one file: iterate it for dyno_sample_batch records; read `stats` afterwards.

    Construction reads the file once to compute its identity (`file_id`) and decides the start time;
    parsing happens while iterating, one buffered pass, memory bounded by `batch_samples` per channel.
    """

    def __init__(self, path: str | os.PathLike[str], *, station_id: str, fmt: str = "auto",
                 mapping: str | os.PathLike[str] | Mapping[str, Any] | FileMapping | None = None,
                 batch_samples: int = 500, start_time_ms: int | None = None, strict: bool = False,
                 progress: bool = True):
        if batch_samples < 1:
            raise ValueError(f"batch_samples must be at least 1, got {batch_samples}")
        self.path = Path(path)
        self.station_id = station_id
        self.batch_samples = batch_samples
        self.parser = parser_for(self.path, fmt)
        self.fmt = self.parser.FORMAT
        self.file_id = file_identity(self.path)
        self.options = ParseOptions(label=str(path), mapping=load_mapping(mapping), strict=strict)
        self.stats = ParseStats(label=str(path), strict=strict)
        self.batches = 0
        self._start_time_arg = start_time_ms
        self.start_time_ms: int | None = start_time_ms
        self.start_time_source = "argument" if start_time_ms is not None else ""
        self._progress = progress
        self._records = self._generate()

    def __iter__(self) -> FileImport:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._records)

    def close(self) -> None:
        """Stop early and close the file (also done when iteration ends)."""
        self._records.close()

    def _generate(self) -> Generator[dict[str, Any], None, None]:
        size = self.path.stat().st_size
        show = self._progress and sys.stderr.isatty()
        with open(self.path, "rb") as handle, tqdm(total=size, unit="B", unit_scale=True, disable=not show,
                                                   desc=self.path.name) as bar:
            parsed = self.parser.parse(handle, self.options)
            self.stats = parsed.stats
            start_ms = self._decide_start(parsed)

            def tick() -> None:
                # A text parser's TextIOWrapper closes the handle when it is collected at the end of the parse.
                if not handle.closed:
                    bar.update(max(0, handle.tell() - bar.n))

            yield from self._batched(parsed, start_ms, tick)
            bar.update(size - bar.n)
        if self.stats.errors or self.stats.skipped_columns:
            log.warning("%s: imported %d samples; %d bad rows skipped, %d columns not imported (%s)", self.path,
                        self.stats.samples, self.stats.errors, len(self.stats.skipped_columns),
                        ", ".join(self.stats.skipped_columns))

    def _decide_start(self, parsed: ParsedFile) -> int:
        if self._start_time_arg is not None:
            return self._start_time_arg
        if parsed.start_time_ms is not None:
            self.start_time_ms, self.start_time_source = parsed.start_time_ms, "file"
        else:
            self.start_time_ms, self.start_time_source = self.path.stat().st_mtime_ns // 1_000_000, "mtime"
        return self.start_time_ms

    def _batched(self, parsed: ParsedFile, start_ms: int, tick: Callable[[], None]) -> Iterator[dict[str, Any]]:
        pending: dict[str, list[dict[str, Any]]] = {}
        first_rows: dict[str, int] = {}
        units: dict[str, str] = {}
        for sample in parsed.samples:
            buffer = pending.setdefault(sample.channel, [])
            if not buffer:
                first_rows[sample.channel] = sample.row
                units[sample.channel] = sample.unit
            buffer.append({"timestamp_ms": start_ms + sample.timestamp_ms, "value": sample.value, "flags": 0})
            if len(buffer) >= self.batch_samples:
                yield self._record(sample.channel, units[sample.channel], first_rows[sample.channel], buffer)
                pending[sample.channel] = []
                tick()
        for channel, buffer in pending.items():
            if buffer:
                yield self._record(channel, units[channel], first_rows[channel], buffer)
        tick()

    def _record(self, channel: str, unit: str, first_row: int, samples: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches += 1
        return {
            "batch_id": f"{self.file_id}:{self.start_time_ms}:{channel}:{first_row}",
            "source": self.fmt,
            "station_id": self.station_id,
            "provider": self.path.name,
            "run_id": self.file_id,
            "channel": channel,
            "unit": unit,
            "sensor_state": "ok",
            "samples": samples,
        }


def import_file(path: str | os.PathLike[str], fmt: str = "auto", *, station_id: str,
                mapping: str | os.PathLike[str] | Mapping[str, Any] | FileMapping | None = None,
                batch_samples: int = 500, start_time_ms: int | None = None, strict: bool = False,
                progress: bool = True) -> FileImport:
    """Import a Power Vision log, WinPEP 8 run or CSV export as dyno_sample_batch records (see module doc).

    `fmt` is `auto` (by content), `pvlog`, `wp8` or `csv`. `mapping` overrides channel detection (a YAML
    path, a dict or a FileMapping, see load_mapping). `strict` turns bad rows from counted errors into a
    FileFormatError. `progress` shows a tqdm bar by bytes read on a terminal (never when stderr is not a TTY).
    The returned FileImport is an iterator of records with `file_id`, `start_time_ms` and `stats`.
    """
    return FileImport(path, station_id=station_id, fmt=fmt, mapping=mapping, batch_samples=batch_samples,
                      start_time_ms=start_time_ms, strict=strict, progress=progress)


class ImportLedger:
    """Which files were already imported completely, by content identity, so a re-import sends nothing twice.

    Stable batch ids and sample keys make a re-sent file harmless inside the stream's dedup window; the
    ledger makes re-importing the same file days later harmless too. `--force` bypasses it.
    """

    def __init__(self, path: Path):
        self.path = path
        self._entries: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, file_id: str) -> dict[str, Any] | None:
        return self._entries.get(file_id)

    def record(self, file_id: str, **facts: Any) -> None:
        self._entries[file_id] = facts
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._entries, indent=2))
        os.replace(tmp, self.path)
