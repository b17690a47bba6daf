"""The edge agent's durable spool: records are on local disk before a source is told they were received.

Layout: one queue per priority (`critical`, `high`, `normal`, `low`, `bulk`), each a directory of
append-only segment files plus a `cursor` file naming the first record not yet acknowledged by Kafka.
Every append batch is written and fsync'd before `append` returns (group commit: one fsync per batch, not
per record). Draining reads from the cursor in order, publishes, waits for the broker's acknowledgements
and only then moves the cursor (written atomically), so a crash or `kill -9` at any point loses nothing
acknowledged: at worst the records between the last cursor write and the crash are sent again, with the
same bytes and batch ids, which downstream dedup (stream dedup on key, channel and event time; ClickHouse
dedup tokens) absorbs.

Disk budget: it bounds the unacknowledged bytes; acknowledged data never costs budget. When a new batch
would exceed it, whole oldest segments of lower priorities are evicted first; if nothing of lower priority
is left, the incoming batch itself is refused (counted as dropped, with the reason), except `critical`,
which raises `SpoolFullError` so the caller applies back-pressure. Acknowledged bytes leave the disk with
their segment: a segment is deleted once the cursor has passed it, and a fully acknowledged active segment
is closed at once, so with the broker up the spool holds little more than what is in flight. Segments are
at most 8 MB and a sixteenth of the budget, so eviction frees space in steps the budget can afford.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleetstream.errors import FleetstreamError

__all__ = ["PRIORITIES", "Spool", "SpoolEntry", "SpoolFullError", "SpoolStats"]

log = logging.getLogger(__name__)

PRIORITIES = ("critical", "high", "normal", "low", "bulk")
_HEADER = struct.Struct("<IIdHHI")  # body length, crc32 of body, appended_at (s), topic len, key len, samples
_SEGMENT_BYTES = 8 * 1024 * 1024
_MIN_SEGMENT_BYTES = 64 * 1024


class SpoolFullError(FleetstreamError, RuntimeError):
    """A critical batch does not fit in the disk budget even after evicting everything of lower priority."""


@dataclass(frozen=True)
class SpoolEntry:
    """One encoded Kafka record as spooled: topic, key, value, and how many samples it carries."""

    topic: str
    key: bytes
    value: bytes
    samples: int = 1
    source: str = ""
    appended_at: float = 0.0


@dataclass
class SpoolStats:
    spooled_records: int = 0
    spooled_samples: int = 0
    published_records: int = 0
    published_samples: int = 0
    failed_publishes: int = 0
    dropped_samples: Counter[str] = field(default_factory=Counter)
    """Samples dropped, keyed by '<priority>:<reason>'."""
    corrupt_tails: int = 0
    last_latency_s: float = 0.0


@dataclass(frozen=True)
class _Position:
    segment: int
    offset: int


class _Queue:
    """One priority's segments and cursor."""

    def __init__(self, directory: Path, segment_bytes: int = _SEGMENT_BYTES):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.cursor = self._read_cursor()
        for segment in self.segments():
            if segment < self.cursor.segment:  # acknowledged; a crash came between the cursor write and unlink
                self._path(segment).unlink()
        segments = self.segments()
        # a cursor past the last segment (everything acknowledged): the next append starts the cursor's segment
        self.active = max(segments[-1], self.cursor.segment) if segments else self.cursor.segment
        self.active_size = self._path(self.active).stat().st_size if self._path(self.active).exists() else 0

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:012d}.seg"

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg"))

    def _read_cursor(self) -> _Position:
        path = self.dir / "cursor"
        if not path.exists():
            return _Position(0, 0)
        segment, offset = path.read_text().split()
        return _Position(int(segment), int(offset))

    def _settled(self, position: _Position) -> _Position:
        """A cursor at the end of a segment moves to the start of the next one, so the segment can be deleted;
        at the end of the active segment that means closing it (the next append opens a new one)."""
        if position.segment == self.active:
            if position.offset < self.active_size or self.active_size == 0:
                return position
            self.active, self.active_size = self.active + 1, 0
            return _Position(self.active, 0)
        path = self._path(position.segment)
        if path.exists() and position.offset >= path.stat().st_size:
            return _Position(position.segment + 1, 0)
        return position

    def write_cursor(self, position: _Position) -> None:
        position = self._settled(position)
        tmp = self.dir / "cursor.tmp"
        with tmp.open("w") as out:
            out.write(f"{position.segment} {position.offset}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.dir / "cursor")
        self.cursor = position
        for segment in self.segments():
            if segment < position.segment:
                self._path(segment).unlink(missing_ok=True)

    def append(self, payload: bytes) -> None:
        if self.active_size >= self.segment_bytes:
            self.active += 1
            self.active_size = 0
        with self._path(self.active).open("ab") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        self.active_size += len(payload)

    def size_bytes(self) -> int:
        return sum(self._path(s).stat().st_size for s in self.segments())

    def pending_bytes(self) -> int:
        total = self.size_bytes()
        if self._path(self.cursor.segment).exists():
            total -= self.cursor.offset
        return max(0, total)

    def evict_oldest_segment(self) -> tuple[int, int] | None:
        """Drop the oldest unacknowledged segment (not the active one): (records, samples) lost."""
        candidates = [s for s in self.segments() if s >= self.cursor.segment and s != self.active]
        if not candidates:
            return None
        oldest = candidates[0]
        start = self.cursor.offset if oldest == self.cursor.segment else 0
        records = samples = 0
        for entry, _ in self.read(_Position(oldest, start), limit=None, single_segment=True):
            records += 1
            samples += entry.samples
        self.write_cursor(_Position(oldest + 1, 0))
        return records, samples

    def read(self, start: _Position, limit: int | None,
             single_segment: bool = False) -> Iterator[tuple[SpoolEntry, _Position]]:
        """Entries from `start`, each with the position just after it (what the cursor becomes once it is acked)."""
        count = 0
        for segment in [s for s in self.segments() if s >= start.segment]:
            offset = start.offset if segment == start.segment else 0
            with self._path(segment).open("rb") as src:
                src.seek(offset)
                while limit is None or count < limit:
                    entry, size = _read_entry(src)
                    if entry is None:
                        break
                    offset += size
                    count += 1
                    yield entry, _Position(segment, offset)
            if single_segment or (limit is not None and count >= limit):
                return


def _encode(entry: SpoolEntry, appended_at: float) -> bytes:
    topic = entry.topic.encode()
    source = entry.source.encode()
    body = topic + entry.key + bytes([len(source)]) + source + entry.value
    return _HEADER.pack(len(body), zlib.crc32(body), appended_at, len(topic), len(entry.key), entry.samples) + body


def _read_entry(src: object) -> tuple[SpoolEntry | None, int]:
    read = src.read  # type: ignore[attr-defined]
    header = read(_HEADER.size)
    if not header:
        return None, 0
    if len(header) < _HEADER.size:
        raise _TornTail()
    length, crc, appended_at, topic_len, key_len, samples = _HEADER.unpack(header)
    body = read(length)
    if len(body) < length or zlib.crc32(body) != crc:
        raise _TornTail()
    topic = body[:topic_len].decode()
    key = body[topic_len:topic_len + key_len]
    source_len = body[topic_len + key_len]
    start = topic_len + key_len + 1
    source = body[start:start + source_len].decode()
    value = body[start + source_len:]
    return SpoolEntry(topic, key, value, samples, source, appended_at), _HEADER.size + length


class _TornTail(Exception):
    """A record cut short by a crash mid-write: it was never acknowledged, so it is discarded."""


Publish = Callable[[Sequence[SpoolEntry]], list[bool]]
"""Sends entries and reports, per entry, whether the broker acknowledged it (blocking until known)."""


class Spool:
    """The durable queue between sources and the Kafka producer (see the module docstring)."""

    def __init__(self, directory: Path, budget_bytes: int = 1 << 30):
        """`budget_bytes` bounds the unacknowledged data on disk (see the module docstring)."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self._lock_file = (self.dir / "lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"spool {self.dir} is in use by another process") from None
        segment_bytes = min(_SEGMENT_BYTES, max(_MIN_SEGMENT_BYTES, budget_bytes // 16))
        self._queues = {p: _Queue(self.dir / p, segment_bytes) for p in PRIORITIES}
        self._lock = threading.Lock()
        self.stats = SpoolStats()
        self._repair_tails()

    def _repair_tails(self) -> None:
        for priority, queue in self._queues.items():
            for segment in queue.segments():
                path = queue.dir / f"{segment:012d}.seg"
                good = 0
                with path.open("rb") as src:
                    try:
                        while True:
                            entry, size = _read_entry(src)
                            if entry is None:
                                break
                            good += size
                    except _TornTail:
                        log.warning("spool %s segment %d: discarding a torn record at byte %d (crash mid-write)",
                                    priority, segment, good)
                        self.stats.corrupt_tails += 1
                if good != path.stat().st_size:
                    os.truncate(path, good)
            queue.active_size = (queue.dir / f"{queue.active:012d}.seg").stat().st_size \
                if (queue.dir / f"{queue.active:012d}.seg").exists() else 0

    def append(self, entries: Sequence[SpoolEntry], priority: str = "normal") -> bool:
        """Write a batch durably. True when stored; False when refused by the disk budget (counted as dropped)."""
        if priority not in self._queues:
            raise ValueError(f"unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}")
        now = time.time()
        payload = b"".join(_encode(e, now) for e in entries)
        samples = sum(e.samples for e in entries)
        with self._lock:
            if not self._make_room(len(payload), priority):
                if priority == "critical":
                    raise SpoolFullError(f"spool budget {self.budget_bytes} bytes exhausted by critical data")
                self.stats.dropped_samples[f"{priority}:budget"] += samples
                return False
            self._queues[priority].append(payload)
            self.stats.spooled_records += len(entries)
            self.stats.spooled_samples += samples
        return True

    def _make_room(self, needed: int, priority: str) -> bool:
        rank = PRIORITIES.index(priority)
        # Only unacknowledged bytes count: acknowledged ones are already in Kafka and leave with their segment.
        while self.pending_bytes() + needed > self.budget_bytes:
            for lower in reversed(PRIORITIES[rank + 1:]):
                evicted = self._queues[lower].evict_oldest_segment()
                if evicted is not None:
                    records, samples = evicted
                    self.stats.dropped_samples[f"{lower}:evicted"] += samples
                    log.warning("spool over budget: evicted %d %s records (%d samples)", records, lower, samples)
                    break
            else:
                return False
        return True

    def size_bytes(self) -> int:
        return sum(q.size_bytes() for q in self._queues.values())

    def pending_bytes(self) -> int:
        return sum(q.pending_bytes() for q in self._queues.values())

    def drain_once(self, publish: Publish, max_records: int = 10_000) -> int:
        """Publish the next chunk (highest priority first, in order); returns records acknowledged.

        The cursor moves only over the acknowledged prefix, so a failure in the middle of a chunk re-sends
        from the first unacknowledged record next time: order is kept, nothing is skipped.
        """
        for priority in PRIORITIES:
            queue = self._queues[priority]
            with self._lock:
                chunk = list(queue.read(queue.cursor, limit=max_records))
            if not chunk:
                continue
            acked = publish([entry for entry, _ in chunk])
            prefix = 0
            while prefix < len(chunk) and acked[prefix]:
                prefix += 1
            if prefix:
                # counted before the cursor moves: whoever sees nothing pending sees these records counted
                self.stats.published_records += prefix
                self.stats.published_samples += sum(entry.samples for entry, _ in chunk[:prefix])
                self.stats.last_latency_s = time.time() - chunk[prefix - 1][0].appended_at
                with self._lock:
                    queue.write_cursor(chunk[prefix - 1][1])
            if prefix < len(chunk):
                self.stats.failed_publishes += len(chunk) - prefix
            return prefix
        return 0

    def pending_records(self) -> int:
        with self._lock:
            return sum(sum(1 for _ in q.read(q.cursor, limit=None)) for q in self._queues.values())

    def close(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
