"""Event-time windows against an independent record-at-a-time oracle, including restarts mid-stream."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.schemas import codec, registry
from fleetstream.streams.windows import ChannelWindows, WindowSpec, nearest_rank_p95

SMALL_SPECS = (WindowSpec("tumbling", 1_000, 1_000), WindowSpec("hopping", 5_000, 1_000))
LATENESS_MS = 500

Batch = list[tuple[int, float]]


# ---------------------------------------------------------------------------- the oracle


def oracle_p95(values: list[float]) -> float:
    ordered = sorted(values)
    rank = math.ceil(len(ordered) * 95 / 100)  # exact rational ceil: 95n/100 with integers first
    return ordered[rank - 1]


@dataclass
class Oracle:
    """One record at a time, window by window, with lists: the semantics spelled out the slow way."""

    specs: tuple[WindowSpec, ...]
    lateness_ms: int
    watermark: float = -math.inf
    arrival: int = 0
    contents: dict[tuple[str, int, int], list[tuple[int, float, int]]] = field(
        default_factory=lambda: defaultdict(list))
    emitted: set[tuple[str, int, int]] = field(default_factory=set)

    def windows_of(self, time_ms: int) -> list[tuple[str, int, int]]:
        found = []
        for spec in self.specs:
            start = (time_ms // spec.advance_ms) * spec.advance_ms
            while start + spec.size_ms > time_ms:
                found.append((spec.kind, start, start + spec.size_ms))
                start -= spec.advance_ms
        return found

    def feed(self, batch: Batch) -> tuple[list[dict[str, object]], list[int]]:
        late = []
        for index, (time_ms, value) in enumerate(batch):
            open_windows = [w for w in self.windows_of(time_ms) if w[2] > self.watermark]
            for window in open_windows:
                self.contents[window].append((time_ms, value, self.arrival))
            if not open_windows:
                late.append(index)
            self.arrival += 1
            self.watermark = max(self.watermark, time_ms - self.lateness_ms)
        return self.close(), late

    def close(self) -> list[dict[str, object]]:
        out = []
        for window in sorted(self.contents):
            if window[2] <= self.watermark and window not in self.emitted:
                self.emitted.add(window)
                samples = self.contents[window]
                values = [value for _, value, _ in samples]
                last = max(samples, key=lambda s: (s[0], s[2]))[1]
                out.append({"window_kind": window[0], "window_start_ms": window[1], "window_end_ms": window[2],
                            "count": len(values), "min": min(values), "max": max(values),
                            "mean": sum(values) / len(values), "last": last, "p95": oracle_p95(values)})
        return out

    def flush(self, up_to_ms: int) -> list[dict[str, object]]:
        self.watermark = max(self.watermark, up_to_ms)
        return self.close()


def by_window(aggregates: list[dict[str, object]]) -> dict[tuple[object, object], dict[str, object]]:
    keyed = {(a["window_kind"], a["window_start_ms"]): a for a in aggregates}
    assert len(keyed) == len(aggregates), "a window was emitted twice"
    return keyed


def assert_same_windows(actual: list[dict[str, object]], expected: list[dict[str, object]]) -> None:
    got, want = by_window(actual), by_window(expected)
    assert got.keys() == want.keys()
    for window, agg in want.items():
        mine = got[window]
        for name in ("window_end_ms", "count", "min", "max", "last", "p95"):
            assert mine[name] == agg[name], (window, name)
        assert math.isclose(float(mine["mean"]), float(agg["mean"]), rel_tol=1e-9, abs_tol=1e-9), window  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- generated streams

values = st.one_of(st.sampled_from([0.0, 1.0, 2.5, -3.0]), st.floats(-1e6, 1e6, allow_nan=False, width=32))


@st.composite
def streams(draw: st.DrawFn) -> list[Batch]:
    """Batches around a moving clock: jitter (out of order), stragglers (late) and repeats (duplicates)."""
    grid = draw(st.sampled_from([1, 100, 250]))  # coarse grids land exactly on window and watermark edges
    clock = draw(st.integers(-80, 80)) * 250
    batches: list[Batch] = []
    sent: list[tuple[int, float]] = []
    for _ in range(draw(st.integers(1, 8))):
        batch: Batch = []
        for _ in range(draw(st.integers(0, 25))):
            clock += draw(st.integers(0, 700 // grid)) * grid
            kind = draw(st.sampled_from(["normal", "normal", "normal", "jitter", "straggler", "repeat"]))
            if kind == "repeat" and sent:
                time_ms, value = draw(st.sampled_from(sent))
                if draw(st.booleans()):
                    value = draw(values)
            else:
                offset = {"normal": 0, "jitter": draw(st.integers(-1_500 // grid, 0)) * grid,
                          "straggler": draw(st.integers(-12_000 // grid, -2_000 // grid)) * grid, "repeat": 0}[kind]
                time_ms, value = clock + offset, draw(values)
            batch.append((time_ms, value))
            sent.append((time_ms, value))
        batches.append(batch)
    return batches


def run(windows: ChannelWindows, batches: list[Batch], restart_after: int | None = None
        ) -> tuple[list[list[dict[str, object]]], list[list[int]], ChannelWindows]:
    outputs, lates = [], []
    for number, batch in enumerate(batches):
        ts = [t for t, _ in batch]
        vs = [v for _, v in batch]
        out = windows.process(ts, vs)
        outputs.append(out.aggregates)
        lates.append(out.late_indices.tolist())
        if number == restart_after:
            windows = ChannelWindows.from_dict(json.loads(json.dumps(windows.to_dict())))
    return outputs, lates, windows


def small_windows() -> ChannelWindows:
    return ChannelWindows("veh-1", "engine_speed", "rpm", "telemetry.signals.valid", SMALL_SPECS, LATENESS_MS)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_every_window_matches_the_oracle_and_is_emitted_once(batches: list[Batch]) -> None:
    oracle = Oracle(SMALL_SPECS, LATENESS_MS)
    outputs, lates, windows = run(small_windows(), batches)
    everything: list[dict[str, object]] = []
    for batch, output, late in zip(batches, outputs, lates, strict=True):
        expected, expected_late = oracle.feed(batch)
        assert_same_windows(output, expected)
        assert late == expected_late
        everything.extend(output)
    final = max((t for batch in batches for t, _ in batch), default=0) + 10_000
    flushed = windows.flush(final)
    assert_same_windows(flushed, oracle.flush(final))
    everything.extend(flushed)
    by_window(everything)  # exactly once over the whole run
    assert windows.buffered_samples == 0
    admitted = sum(len(b) for b in batches) - sum(len(late) for late in lates)
    assert admitted == 0 or everything


@settings(max_examples=200, deadline=None)
@given(streams(), st.data())
def test_restart_mid_stream_from_serialised_state_changes_nothing(batches: list[Batch], data: st.DataObject) -> None:
    restart_after = data.draw(st.integers(0, len(batches) - 1))
    plain_out, plain_late, plain = run(small_windows(), batches)
    restarted_out, restarted_late, restarted = run(small_windows(), batches, restart_after)
    assert restarted_out == plain_out
    assert restarted_late == plain_late
    assert restarted.flush(10**9) == plain.flush(10**9)


@settings(max_examples=100, deadline=None)
@given(streams(), st.data())
def test_how_the_stream_is_cut_into_batches_does_not_matter(batches: list[Batch], data: st.DataObject) -> None:
    records = [record for batch in batches for record in batch]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=5)))
    rebatched = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]
    whole_out, whole_late, whole = run(small_windows(), [records])
    cut_out, cut_late, cut = run(small_windows(), rebatched)
    assert by_window([a for out in cut_out for a in out] + cut.flush(10**9)) == \
        by_window([a for out in whole_out for a in out] + whole.flush(10**9))
    offsets = np.cumsum([0] + [len(b) for b in rebatched])
    assert sorted(int(o) + i for o, late in zip(offsets, cut_late, strict=False) for i in late) == whole_late[0]


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=300))
def test_p95_is_the_nearest_rank_value(sample: list[float]) -> None:
    assert nearest_rank_p95(sample) == oracle_p95(sample)


def test_p95_hand_computed_ranks() -> None:
    assert nearest_rank_p95(list(range(1, 21))) == 19.0  # ceil(0.95 * 20) = 19
    assert nearest_rank_p95(list(range(1, 101))) == 95.0
    assert nearest_rank_p95(list(range(1, 22))) == 20.0  # ceil(19.95) = 20
    assert nearest_rank_p95([7.0]) == 7.0


def test_default_windows_one_minute_tumbling_and_five_minute_hopping() -> None:
    windows = ChannelWindows("veh-1", "afr", "AFR", "dyno.samples.valid")
    ts = np.arange(0, 360_000, 1_000)  # one sample a second for 6 min, value = minute index
    out = windows.process(ts, ts // 60_000)
    tumbling = [a for a in out.aggregates if a["window_kind"] == "tumbling"]
    hopping = [a for a in out.aggregates if a["window_kind"] == "hopping"]
    # watermark = 359 s - 10 s = 349 s: tumbling windows ending at 60..300 s are final, the one ending at 360 s not.
    assert [a["window_end_ms"] for a in tumbling] == [60_000, 120_000, 180_000, 240_000, 300_000]
    assert [(a["count"], a["mean"], a["last"]) for a in tumbling[:2]] == [(60, 0.0, 0.0), (60, 1.0, 1.0)]
    # hopping windows with end <= 349 s: the partial ones [-240 s, 60 s) ... and the full [0, 300 s).
    assert [a["window_start_ms"] for a in hopping] == [-240_000, -180_000, -120_000, -60_000, 0]
    assert hopping[-1]["count"] == 300 and hopping[-1]["p95"] == 4.0 and hopping[-1]["mean"] == 2.0
    late = windows.process([5_000], [1.0])
    assert late.late_indices.tolist() == [0]


def test_hopping_sample_counts_only_in_its_open_windows() -> None:
    windows = ChannelWindows("k", "c", specs=(WindowSpec("hopping", 3_000, 1_000),), allowed_lateness_ms=0)
    windows.process([10_000], [1.0])  # watermark 10 s: windows ending at <= 10 s are closed
    out = windows.process([8_500], [2.0])  # in [6,9), [7,10), [8,11): only [8,11) is open
    assert out.late_indices.size == 0 and out.partially_late == 1
    final = by_window(windows.flush(20_000))
    assert final[("hopping", 8_000)]["count"] == 2
    assert ("hopping", 6_000) not in final and ("hopping", 7_000) not in final


def test_last_prefers_the_later_arrival_on_equal_event_times() -> None:
    windows = ChannelWindows("k", "c", specs=(WindowSpec("tumbling", 1_000, 1_000),), allowed_lateness_ms=0)
    windows.process([100, 900, 900], [1.0, 2.0, 3.0])
    (agg,) = windows.flush(1_000)
    assert agg["last"] == 3.0 and agg["count"] == 3


def test_aggregates_are_window_aggregate_records() -> None:
    windows = small_windows()
    windows.process([0, 10], [1.0, 2.0])
    aggregates = windows.flush(100_000)
    assert aggregates
    for agg in aggregates:
        assert set(agg) == {f["name"] for f in registry.latest("window_aggregate").raw["fields"]}
        assert codec.decode(codec.encode("window_aggregate", agg), "window_aggregate") == agg


def test_bad_input_is_rejected() -> None:
    windows = small_windows()
    with pytest.raises(ValueError):
        windows.process([1, 2], [1.0])
    with pytest.raises(ValueError):
        windows.process([1], [float("nan")])
    with pytest.raises(ValueError):
        WindowSpec("hopping", 5_000, 2_000)
