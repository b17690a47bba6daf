"""The in-flight offset range of each partition, stored next to the data (table `sink_offsets`).

This is the state machine of the official ClickHouse Kafka connector (its docs/DESIGN.md), reduced to
what one consumer group needs. Before a batch is inserted its range is recorded as `before`; after the
insert is acknowledged, as `after`; then the offsets are committed to Kafka. After a crash or a
rebalance the new owner of a partition reads the record:

* `after` [a, b]: everything up to b is stored; offsets <= b that Kafka re-delivers (the commit was lost)
  are skipped without touching ClickHouse.
* `before` [a, b]: the insert may or may not have landed. The batcher re-forms exactly [a, b] (it cuts
  there, whatever the size and time limits say), so the insert carries the same deduplication token
  `<topic>-<partition>-a-b` and ClickHouse stores it at most once.

The state lives in ClickHouse rather than a local file so that it moves with the partition when another
sink process takes it over. EmbeddedRocksDB overwrites a key in place, so two small writes per batch cost
no MergeTree parts; where a server lacks it, the table is a ReplacingMergeTree (see `migrations`), and reads
take the newest row per key, ordered by (updated_at, max_offset, state): within one millisecond a later
range has a larger max_offset, and for the same range `after` follows `before`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass

from fleetstream.store.client import DATABASE, Client

__all__ = ["InFlight", "OffsetStore", "RangeState"]


class RangeState(enum.Enum):
    BEFORE = "before"
    """Insert started, not acknowledged."""
    AFTER = "after"
    """Insert acknowledged (offsets may not be committed yet)."""


@dataclass(frozen=True)
class InFlight:
    """The last batch range of one partition and how far it got."""

    min_offset: int
    max_offset: int
    state: RangeState


class OffsetStore:
    """Reads and writes `sink_offsets` rows of one consumer group."""

    _COLUMNS = ("key", "group_id", "topic", "partition", "min_offset", "max_offset", "state", "updated_at")

    def __init__(self, client: Client, group_id: str):
        self._client = client
        self._group_id = group_id

    def _key(self, topic: str, partition: int) -> str:
        return f"{self._group_id}/{topic}/{partition}"

    def load(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], InFlight]:
        """The recorded ranges of `partitions` (absent: nothing recorded yet)."""
        keys = {self._key(t, p): (t, p) for t, p in partitions}
        if not keys:
            return {}
        result = self._client.query(
            "SELECT key, argMax((min_offset, max_offset, state), (updated_at, max_offset, state)) "
            f"FROM {DATABASE}.sink_offsets WHERE key IN {{keys:Array(String)}} GROUP BY key",
            parameters={"keys": list(keys)},
        )
        return {keys[key]: InFlight(int(lo), int(hi), RangeState(state)) for key, (lo, hi, state) in result.result_rows}

    def mark(self, topic: str, partition: int, min_offset: int, max_offset: int, state: RangeState) -> None:
        """Record the range of `topic`/`partition` as `state` (overwrites the previous record)."""
        row = [self._key(topic, partition), self._group_id, topic, partition, min_offset, max_offset, state.value,
               int(time.time() * 1000)]
        self._client.insert(f"{DATABASE}.sink_offsets", [row], column_names=list(self._COLUMNS))
