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

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fleetstream.producers import csvimport, pvlog, wp8
from fleetstream.producers.file_parsing import (
    SNIFF_BYTES,
    ChannelInfo,
    ColumnMapping,
    CsvReader,
    FileFormatError,
    FileMapping,
    FileParser,
    FileSample,
    Issue,
    ParsedFile,
    ParseOptions,
    ParseStats,
    load_mapping,
)

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
# The parsers' shared vocabulary (producers/file_parsing.py) is re-exported: importing a file needs it.

log = logging.getLogger(__name__)


# --- identity, detection, import ------------------------------------------------------------------------------


def file_identity(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the file's content, hex: the run id of an import, the same for every copy of the file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _parsers() -> dict[str, FileParser]:
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
