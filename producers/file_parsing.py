"""What every file parser shares: the samples it yields, its options and statistics, and channel naming.

A file format is a parser module (`producers/pvlog.py`, `producers/wp8.py`, `producers/csvimport.py`) with
the same three names: `FORMAT`, `sniff(head) -> bool` and `parse(handle, label, options) -> ParsedFile`.
The parsers import this module; `producers/files.py` imports the parsers (detection, import, ledger), so
the dependency runs one way.
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol

import yaml

from fleetstream.errors import FleetstreamError
from fleetstream.schemas.units import UNKNOWN_UNIT, UnknownUnitError, canonical_unit, is_unknown_unit, to_canonical

__all__ = [
    "SNIFF_BYTES",
    "ChannelInfo",
    "ColumnMapping",
    "CsvReader",
    "FileFormatError",
    "FileMapping",
    "FileParser",
    "FileSample",
    "Issue",
    "ParseOptions",
    "ParseStats",
    "ParsedFile",
    "first_line",
    "known_channel",
    "load_mapping",
    "parse_number",
    "resolve_channel",
    "slug",
    "split_unit",
    "strip_device",
    "text_encoding",
    "unique_channels",
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


