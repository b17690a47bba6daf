"""Cutting one partition's messages into batches whose offset ranges a restarted sink forms again.

Pure logic over offsets and clocks (no Kafka, no ClickHouse): the consumer feeds messages in partition
order and asks when to cut. Normally a batch closes at `batch_rows` rows or `batch_seconds` age; after a
crash, the recorded `before` range of the partition overrides both, so the replayed batch is exactly the
one whose insert may have landed (see `fleetstream.sinks.clickhouse.offsets`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetstream.schemas.sample_batch import SampleBatch

from fleetstream.sinks.clickhouse.offsets import InFlight, RangeState

__all__ = ["Batch", "Buffered", "PartitionBatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Buffered:
    """One consumed message: decoded (`record`) or not (`error` says why), with its size in rows."""

    offset: int
    key: bytes | None
    raw: bytes
    record: dict[str, Any] | SampleBatch | None
    """A signal or dyno batch is held as columns (`SampleBatch`), other records as decoded dicts."""
    error: str | None
    rows: int


@dataclass(frozen=True)
class Batch:
    """A closed batch: consecutive messages of one partition, first to last offset inclusive."""

    topic: str
    partition: int
    items: list[Buffered]

    @property
    def first_offset(self) -> int:
        return self.items[0].offset

    @property
    def last_offset(self) -> int:
        return self.items[-1].offset

    @property
    def token(self) -> str:
        """The insert deduplication token: the same range always gives the same token."""
        return f"{self.topic}-{self.partition}-{self.first_offset}-{self.last_offset}"

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)


@dataclass
class PartitionBatcher:
    """The open batch of one partition, and the recorded range it must respect."""

    topic: str
    partition: int
    prior: InFlight | None = None
    items: list[Buffered] = field(default_factory=list)
    rows: int = 0
    opened_at: float = 0.0
    pin: int | None = None
    """Last offset of a batch being re-formed after a crash: the batch must end exactly here."""

    def __post_init__(self) -> None:
        if self.prior is not None and self.prior.state is RangeState.BEFORE:
            self.pin = self.prior.max_offset

    def admits(self, offset: int) -> bool:
        """False for an offset that is already stored (re-delivered because its commit was lost)."""
        prior = self.prior
        if prior is None:
            return True
        if prior.state is RangeState.AFTER:
            return offset > prior.max_offset
        return offset >= prior.min_offset

    def must_cut_before(self, offset: int) -> bool:
        """True when `offset` lies beyond the range being re-formed: close the open batch first."""
        return self.pin is not None and bool(self.items) and offset > self.pin

    def add(self, item: Buffered, now: float) -> None:
        """Append a message (admitted, in partition order)."""
        if not self.items:
            self.opened_at = now
            if self.pin is not None and self.prior is not None and item.offset != self.prior.min_offset:
                log.warning("%s[%d]: unacknowledged batch %d-%d cannot be re-formed (first offset now %d); "
                            "its rows may be stored twice", self.topic, self.partition, self.prior.min_offset,
                            self.prior.max_offset, item.offset)
                self.pin = None
        self.items.append(item)
        self.rows += item.rows

    def due(self, now: float, batch_rows: int, batch_seconds: float) -> bool:
        """Whether the open batch should be inserted now."""
        if not self.items:
            return False
        if self.pin is not None:
            return self.items[-1].offset >= self.pin
        return self.rows >= batch_rows or now - self.opened_at >= batch_seconds

    def take(self) -> Batch:
        """Close the open batch and start a new, empty one."""
        if self.pin is not None and self.items[-1].offset < self.pin:
            log.warning("%s[%d]: closing batch at %d before the unacknowledged range ends at %d; its rows may be "
                        "stored twice", self.topic, self.partition, self.items[-1].offset, self.pin)
        batch = Batch(self.topic, self.partition, self.items)
        self.items, self.rows, self.pin = [], 0, None
        return batch

    def stored(self, batch: Batch) -> None:
        """The batch is acknowledged by ClickHouse: later re-deliveries of its offsets are skipped."""
        self.prior = InFlight(batch.first_offset, batch.last_offset, RangeState.AFTER)
