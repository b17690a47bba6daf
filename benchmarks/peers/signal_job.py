"""The benchmark job's logic for the peers, self-contained (the peers' venv cannot import fleetstream).

The same job as fleetstream's worker, for `telemetry.signals` (signal_batch records):

1. decode: Avro single-object encoding (`C3 01`, 8-byte CRC-64-AVRO fingerprint, body), the writer schema
   found by fingerprint among the repository's `schemas/avro/signal_batch/v*.avsc`;
2. validate: event time within [now - 30 days, now + 5 min], value finite, and DESIGN.md's default range
   table by channel alias and unit (outside the hard range: dropped, as the worker dead-letters it);
3. dedup on (key, channel, event time ms): the first arrival wins, remembered for 6 min of event time;
4. tumbling windows of 60 s in event time, watermark = greatest event time - 10 s allowed lateness, a window
   is emitted once when the watermark passes its end, with count, min, max, mean (fsum / count), last (value
   at the greatest event time; ties: the later arrival) and p95 (nearest rank: sorted value at rank
   ceil(0.95 n)), as streams/windows.py defines them.

`ChannelState` is plain data (`to_dict` / `from_dict`) so the Quix job can keep it in its state store.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "signal_batch"
MARKER = b"\xc3\x01"
WINDOW_MS = 60_000
LATENESS_MS = 10_000
DEDUP_HORIZON_MS = 360_000
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
MAX_AGE_MS = 30 * 24 * 3600 * 1000

# DESIGN.md's range table (hard min, hard max) by channel alias, with the unit it applies to.
_RANGES: list[tuple[tuple[str, ...], str, float | None, float | None]] = [
    (("engine_speed", "rpm", "EngineSpeed", "Engine Speed", "engine_rpm"), "rpm", 0, 20000),
    (("afr", "AFR", "Air/Fuel Ratio", "air_fuel_ratio"), "AFR", 6.0, 35.0),
    (("map", "MAP", "manifold_pressure", "ManifoldPressure"), "kPa", 0, 300),
    (("power", "horsepower", "Power", "hp"), "hp", -50, 2000),
    (("torque", "Torque"), "ft-lb", -100, 2000),
    (("tps", "TPS", "throttle", "ThrottlePosition", "Throttle Position"), "%", 0, 100),
    (("iat", "IAT", "intake_air_temp", "IntakeAirTemp"), "degF", -40, 300),
]
RANGES: dict[str, tuple[str, float | None, float | None]] = {
    alias.lower(): (unit, low, high) for aliases, unit, low, high in _RANGES for alias in aliases}


def _load_writers() -> dict[bytes, Any]:
    writers = {}
    for path in sorted(SCHEMA_DIR.glob("v*.avsc")):
        parsed = fastavro.parse_schema(json.loads(path.read_text()))
        writers[bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))] = parsed
    return writers


WRITERS = _load_writers()


def decode(value: bytes) -> dict[str, Any] | None:
    """The record, or None if the bytes are not a signal_batch in single-object encoding."""
    if len(value) < 10 or value[:2] != MARKER:
        return None
    writer = WRITERS.get(value[2:10])
    if writer is None:
        return None
    try:
        return fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, None)  # type: ignore[return-value]
    except Exception:
        return None


def valid_samples(record: dict[str, Any], now_ms: int) -> tuple[list[int], list[float]]:
    """Event times and values of the samples that pass validation (numeric samples only reach windows)."""
    rule = RANGES.get(str(record["name"]).lower())
    if rule is not None and rule[0] != record["unit"]:
        rule = None
    low, high = (rule[1], rule[2]) if rule is not None else (None, None)
    oldest, newest = now_ms - MAX_AGE_MS, now_ms + MAX_FUTURE_SKEW_MS
    times: list[int] = []
    values: list[float] = []
    for sample in record["samples"]:
        ts, value = sample["timestamp_ms"], sample.get("value")
        if ts > newest or ts < oldest or value is None or not math.isfinite(value):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            continue
        times.append(ts)
        values.append(value)
    return times, values


def p95(values: list[float]) -> float:
    return sorted(values)[(95 * len(values) + 99) // 100 - 1]


class ChannelState:
    """Dedup memory and open tumbling windows of one (key, channel)."""

    def __init__(self) -> None:
        self.max_ts = -(2**62)
        self.seen: set[int] = set()
        self.windows: dict[int, tuple[list[int], list[float]]] = {}

    def process(self, key: str, channel: str, times: list[int], values: list[float]) -> list[dict[str, Any]]:
        """Add a batch in arrival order; return the windows it closed."""
        for ts, value in zip(times, values, strict=True):
            if ts in self.seen and ts >= self.max_ts - DEDUP_HORIZON_MS:
                continue  # a duplicate of (key, channel, event time)
            watermark = self.max_ts - LATENESS_MS
            start = ts // WINDOW_MS * WINDOW_MS
            if start + WINDOW_MS > watermark:  # else late: every window containing it has closed
                window = self.windows.setdefault(start, ([], []))
                window[0].append(ts)
                window[1].append(value)
            self.seen.add(ts)
            self.max_ts = max(self.max_ts, ts)
        floor = self.max_ts - DEDUP_HORIZON_MS
        if len(self.seen) > 4096:
            self.seen = {t for t in self.seen if t >= floor}
        watermark = self.max_ts - LATENESS_MS
        closed = sorted(start for start in self.windows if start + WINDOW_MS <= watermark)
        return [aggregate(key, channel, start, *self.windows.pop(start)) for start in closed]

    def to_dict(self) -> dict[str, Any]:
        return {"max_ts": self.max_ts, "seen": sorted(self.seen),
                "windows": {str(start): [ts, vals] for start, (ts, vals) in self.windows.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelState:
        state = cls()
        state.max_ts = int(data["max_ts"])
        state.seen = set(data["seen"])
        state.windows = {int(start): (ts, vals) for start, (ts, vals) in data["windows"].items()}
        return state


def aggregate(key: str, channel: str, start: int, times: list[int], values: list[float]) -> dict[str, Any]:
    last_ts = max(times)
    last_index = len(times) - 1 - times[::-1].index(last_ts)  # equal times: the later arrival
    return {"key": key, "channel": channel, "window_start_ms": start, "window_end_ms": start + WINDOW_MS,
            "count": len(values), "min": min(values), "max": max(values), "mean": math.fsum(values) / len(values),
            "last": values[last_index], "p95": p95(values)}


def now_ms() -> int:
    return int(time.time() * 1000)
