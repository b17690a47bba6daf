"""Dedup of samples on (key, channel, event time ms) inside a bounded event-time horizon.

A producer retry, a re-imported file or an at-least-once redelivery repeats samples; two samples of one
(key, channel) with the same event time ms are the same sample, and only the first to arrive is kept. One
`ChannelDedup` serves one (key, channel), matching how the window state is keyed, and its state is plain data
for a Faust table (``to_dict`` / ``from_dict``).

Bounded memory: the state remembers the event times seen within ``horizon_ms`` (default 6 min) below the
greatest event time seen, and forgets older ones at the end of each batch. A sample older than that horizon
(compared with the greatest event time seen before it) cannot be checked: it is kept and counted as
``unchecked``. With the horizon at least as long as the longest window plus the allowed lateness (5 min +
10 s by default), such a sample is late for every window anyway, so the window stage dead-letters it and a
duplicate never reaches an aggregate. Memory is one int64 per distinct event time in the horizon (at 100 Hz,
36k timestamps, 288 KB); the serialised form is the run-length-encoded deltas of the sorted timestamps,
zlib-compressed, in base64: under 100 bytes for a regularly sampled channel.

The result does not depend on how the stream is cut into batches: each sample is judged against everything
that arrived before it, in arrival order.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ChannelDedup", "DedupResult"]

_NO_TIME_MS = -(2**62)
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class DedupResult:
    """``keep[i]`` is False for a duplicate; ``duplicates`` + kept samples = the batch size."""

    keep: BoolArray
    duplicates: int
    unchecked: int

    @property
    def kept_indices(self) -> IntArray:
        return np.flatnonzero(self.keep).astype(np.int64)


class ChannelDedup:
    """Seen event times of one (key, channel) within the horizon."""

    def __init__(self, horizon_ms: int = 360_000) -> None:
        if horizon_ms <= 0:
            raise ValueError("dedup horizon must be positive")
        self.horizon_ms = horizon_ms
        self.max_seen_ms = _NO_TIME_MS
        self._seen_ms: IntArray = np.empty(0, dtype=np.int64)  # sorted, unique

    def process(self, timestamps_ms: npt.ArrayLike) -> DedupResult:
        """Judge a batch (in arrival order) and remember its event times."""
        ts = np.asarray(timestamps_ms, dtype=np.int64).reshape(-1)
        if ts.size == 0:
            return DedupResult(keep=np.ones(0, dtype=np.bool_), duplicates=0, unchecked=0)
        max_before = np.maximum.accumulate(np.concatenate([[self.max_seen_ms], ts]))[:-1]
        checkable = ts >= max_before - self.horizon_ms
        candidate_ts = ts[checkable]
        # The first arrival of each event time in the batch, unless an earlier batch already had it.
        _, first_positions = np.unique(candidate_ts, return_index=True)
        first_in_batch = np.zeros(candidate_ts.size, dtype=np.bool_)
        first_in_batch[first_positions] = True
        positions = np.searchsorted(self._seen_ms, candidate_ts)  # the memory is sorted: binary search
        seen_before = self._seen_ms[np.minimum(positions, self._seen_ms.size - 1)] == candidate_ts \
            if self._seen_ms.size else np.zeros(candidate_ts.size, dtype=np.bool_)
        duplicate = np.zeros(ts.size, dtype=np.bool_)
        duplicate[checkable] = seen_before | ~first_in_batch
        self.max_seen_ms = max(self.max_seen_ms, int(ts.max()))
        self._remember(candidate_ts)
        return DedupResult(keep=~duplicate, duplicates=int(np.count_nonzero(duplicate)),
                           unchecked=int(ts.size - candidate_ts.size))

    @property
    def remembered(self) -> int:
        return int(self._seen_ms.size)

    def _remember(self, new_ts: IntArray) -> None:
        fresh = np.unique(new_ts)
        if self._seen_ms.size == 0 or (fresh.size and fresh[0] > self._seen_ms[-1]):
            merged = np.concatenate([self._seen_ms, fresh])  # in-order data: no re-sort of the horizon
        else:
            merged = np.union1d(self._seen_ms, fresh)
        floor = int(np.searchsorted(merged, self.max_seen_ms - self.horizon_ms, side="left"))
        self._seen_ms = merged[floor:]

    def to_dict(self) -> dict[str, Any]:
        return {"horizon_ms": self.horizon_ms, "max_seen_ms": self.max_seen_ms,
                "seen_runs": _encode_sorted(self._seen_ms)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelDedup:
        """Also reads the earlier form, plain deltas under "seen", which changelogs written before may hold."""
        dedup = cls(horizon_ms=int(data["horizon_ms"]))
        dedup.max_seen_ms = int(data["max_seen_ms"])
        dedup._seen_ms = (_decode_sorted(str(data["seen_runs"])) if "seen_runs" in data
                          else _decode_deltas(str(data["seen"])))
        return dedup


def _encode_sorted(values: IntArray) -> str:
    """Sorted int64s as base64(zlib(runs of equal deltas)): regular sampling is a handful of runs.

    Run-length first, so the cheap zlib level 1 (this runs once per batch and channel) has almost
    nothing left to do.
    """
    deltas = np.diff(values, prepend=np.int64(0))
    run_starts = np.flatnonzero(np.diff(deltas, prepend=deltas[:1] + 1))
    run_lengths = np.diff(run_starts, append=np.int64(deltas.size))
    runs = np.column_stack([deltas[run_starts], run_lengths]).astype("<i8")
    return base64.b64encode(zlib.compress(runs.tobytes(), 1)).decode("ascii")


def _decode_sorted(text: str) -> IntArray:
    runs = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i8").reshape(-1, 2)
    return np.cumsum(np.repeat(runs[:, 0], runs[:, 1]), dtype=np.int64)


def _decode_deltas(text: str) -> IntArray:
    deltas = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i8")
    return np.cumsum(deltas, dtype=np.int64)
