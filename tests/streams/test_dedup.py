"""Dedup on event time within a bounded horizon, against a record-at-a-time oracle."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.streams.dedup import ChannelDedup

HORIZON_MS = 1_000


def oracle(batches: list[list[int]], horizon_ms: int) -> tuple[list[list[bool]], int]:
    """Keep the first arrival of each time; times older than the horizon below the max so far are not checked."""
    seen: set[int] = set()
    max_so_far: int | None = None
    keeps, unchecked = [], 0
    for batch in batches:
        keep = []
        for time_ms in batch:
            if max_so_far is not None and time_ms < max_so_far - horizon_ms:
                keep.append(True)
                unchecked += 1
            else:
                keep.append(time_ms not in seen)
                seen.add(time_ms)
            max_so_far = time_ms if max_so_far is None else max(max_so_far, time_ms)
        keeps.append(keep)
    return keeps, unchecked


batches_of_times = st.lists(st.lists(st.integers(0, 3_000), max_size=30), max_size=8)


def run(batches: list[list[int]], restart_after: int | None = None) -> tuple[list[list[bool]], int, int]:
    dedup = ChannelDedup(horizon_ms=HORIZON_MS)
    keeps, duplicates, unchecked = [], 0, 0
    for number, batch in enumerate(batches):
        result = dedup.process(batch)
        keeps.append(result.keep.tolist())
        duplicates += result.duplicates
        unchecked += result.unchecked
        assert result.duplicates + int(result.keep.sum()) == len(batch)
        if number == restart_after:
            dedup = ChannelDedup.from_dict(json.loads(json.dumps(dedup.to_dict())))
        window = {t for b in batches[: number + 1] for t in b if t >= dedup.max_seen_ms - HORIZON_MS}
        assert dedup.remembered == len(window)  # memory: the distinct times of the horizon, nothing more
    return keeps, duplicates, unchecked


@settings(max_examples=300, deadline=None)
@given(batches_of_times)
def test_first_arrival_kept_and_only_true_duplicates_dropped(batches: list[list[int]]) -> None:
    keeps, duplicates, unchecked = run(batches)
    expected, expected_unchecked = oracle(batches, HORIZON_MS)
    assert keeps == expected
    assert unchecked == expected_unchecked
    assert duplicates == sum(k.count(False) for k in expected)


@settings(max_examples=200, deadline=None)
@given(batches_of_times, st.data())
def test_restart_from_serialised_state_changes_nothing(batches: list[list[int]], data: st.DataObject) -> None:
    restart_after = data.draw(st.integers(0, max(0, len(batches) - 1)))
    assert run(batches, restart_after) == run(batches)


@given(st.lists(st.integers(-10**12, 10**12), max_size=200))
def test_within_the_horizon_dedup_is_exact(times: list[int]) -> None:
    dedup = ChannelDedup(horizon_ms=10**13)
    result = dedup.process(np.array(times, dtype=np.int64))
    first_seen: set[int] = set()
    expected = []
    for time_ms in times:
        expected.append(time_ms not in first_seen)
        first_seen.add(time_ms)
    assert result.keep.tolist() == expected and result.unchecked == 0


def test_regular_sampling_state_is_small() -> None:
    dedup = ChannelDedup(horizon_ms=360_000)
    for start in range(0, 600_000, 10_000):
        dedup.process(np.arange(start, start + 10_000, 10))  # 100 Hz for 10 min
    assert dedup.remembered == 36_001
    assert len(json.dumps(dedup.to_dict())) < 1_000


def test_replayed_batch_is_all_duplicates() -> None:
    dedup = ChannelDedup()
    batch = [1_000, 1_010, 1_020]
    assert dedup.process(batch).duplicates == 0
    again = dedup.process(batch)
    assert again.duplicates == 3 and again.kept_indices.tolist() == []


def test_state_written_before_run_length_encoding_is_still_read() -> None:
    # The earlier form: base64(zlib(first value, then deltas)) under "seen", as older changelogs hold it.
    times = np.array([1_000, 1_010, 1_020, 1_035], dtype="<i8")
    old = {"horizon_ms": 1_000, "max_seen_ms": 1_035,
           "seen": base64.b64encode(zlib.compress(np.diff(times, prepend=np.int64(0)).tobytes())).decode()}
    dedup = ChannelDedup.from_dict(old)
    assert dedup.process([1_010, 1_036]).kept_indices.tolist() == [1]
    assert "seen_runs" in dedup.to_dict()
