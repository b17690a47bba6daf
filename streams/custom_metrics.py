"""Custom metrics from config: counters, gauges and histograms with dimensions, emitted as kpi/v1 records.

These are records of the data (config key `streams.metrics`), not the Prometheus operations counters of a
part, which live in `fleetstream.prometheus`.

A `MetricDefinition` picks batches by equality filters on the batch's fields (``where``), labels them with
the values of some of those fields (``dimensions``, e.g. ``name``, ``unit``, ``source``, ``network_name``),
and aggregates the batch's samples per event-time period (tumbling, ``period_ms``, aligned to the epoch):

- counter: the number of samples (``count_samples``), or the sum of their values;
- gauge: the value of the sample with the greatest event time (equal times: the later arrival);
- histogram: cumulative bucket counts for each upper bound ``le`` plus ``+Inf`` (a sample counts in every
  bucket whose bound is >= its value, as Prometheus does), and the ``_count`` and ``_sum`` of the values.

A period ``[start, start + period_ms)`` is emitted once, when the watermark (greatest event time seen by this
aggregator - ``allowed_lateness_ms``) reaches its end; a sample whose period has already been emitted is
*late* and only counted in `MetricsOutput.late_samples` (its record is valid; it just misses the metric).
Dimensions and filters read batch-level fields, not per-sample ones, so a batch costs one filter check and a
few vectorised reductions per metric. The state (open cells and the watermark) is plain JSON data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetstream.streams.kpis import kpi_record

__all__ = ["MetricDefinition", "MetricsAggregator", "MetricsOutput"]

_NO_WATERMARK_MS = -(2**62)


class MetricDefinition(BaseModel):
    """One custom metric from config."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["counter", "gauge", "histogram"]
    scope: Literal["vehicle", "fleet", "run"] = "vehicle"
    scope_field: str = Field(default="vehicle_id", description="Batch field whose value is the kpi scope_id.")
    dimensions: list[str] = Field(default_factory=list, description="Batch fields that label the metric.")
    where: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Equality filters.")
    count_samples: bool = Field(default=False, description="Counter only: count samples instead of summing.")
    buckets: list[float] = Field(default_factory=list, description="Histogram upper bounds, ascending.")
    period_ms: int = Field(default=60_000, gt=0)
    unit: str = ""

    @model_validator(mode="after")
    def _check_buckets(self) -> MetricDefinition:
        if self.kind == "histogram" and (not self.buckets or self.buckets != sorted(set(self.buckets))):
            raise ValueError(f"histogram {self.name} needs strictly ascending buckets")
        return self

    def matches(self, context: Mapping[str, Any]) -> bool:
        return all(context.get(name) == value for name, value in self.where.items())


@dataclass
class MetricsOutput:
    records: list[dict[str, Any]] = field(default_factory=list)
    late_samples: int = 0


class MetricsAggregator:
    """Open periods of every configured metric for the batches one worker key sees."""

    def __init__(self, definitions: Sequence[MetricDefinition], allowed_lateness_ms: int = 10_000) -> None:
        self.definitions = {definition.name: definition for definition in definitions}
        self.allowed_lateness_ms = allowed_lateness_ms
        self.watermark_ms = _NO_WATERMARK_MS
        # Cell key: JSON [metric name, period start, scope id, [[dimension, value], ...]] → partial aggregate.
        self._cells: dict[str, dict[str, Any]] = {}

    def process(self, context: Mapping[str, Any], timestamps_ms: npt.ArrayLike, values: npt.ArrayLike,
                computed_at_ms: int) -> MetricsOutput:
        """Add one batch (batch-level fields + sample columns); return the kpi records of closed periods."""
        ts = np.asarray(timestamps_ms, dtype=np.int64).reshape(-1)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if ts.shape != vals.shape:
            raise ValueError(f"{ts.size} timestamps but {vals.size} values")
        output = MetricsOutput()
        if ts.size == 0:
            return output
        for definition in self.definitions.values():
            if definition.matches(context):
                output.late_samples += self._add(definition, context, ts, vals)
        self.watermark_ms = max(self.watermark_ms, int(ts.max()) - self.allowed_lateness_ms)
        output.records = self._close(computed_at_ms)
        return output

    def flush(self, up_to_ms: int, computed_at_ms: int) -> list[dict[str, Any]]:
        """Emit every period ending at or before ``up_to_ms``."""
        self.watermark_ms = max(self.watermark_ms, up_to_ms)
        return self._close(computed_at_ms)

    def _add(self, definition: MetricDefinition, context: Mapping[str, Any], ts: npt.NDArray[np.int64],
             vals: npt.NDArray[np.float64]) -> int:
        """Fold a batch into its period cells; return how many samples were late."""
        period = definition.period_ms
        starts = (ts // period) * period
        # Per sample, as in the windows: the period is closed if the watermark before the sample passed its end.
        running_max = np.maximum.accumulate(np.concatenate([[self.watermark_ms + self.allowed_lateness_ms], ts]))
        watermark_before = np.maximum(running_max[:-1] - self.allowed_lateness_ms, self.watermark_ms)
        on_time = starts + period > watermark_before
        scope_id = str(context.get(definition.scope_field, ""))
        dims = [[name, str(context.get(name, ""))] for name in definition.dimensions]
        for start in np.unique(starts[on_time]).tolist():
            mask = on_time & (starts == start)
            key = json.dumps([definition.name, start, scope_id, dims])
            self._cells[key] = _fold(definition, self._cells.get(key), ts[mask], vals[mask])
        return int(np.count_nonzero(~on_time))

    def _close(self, computed_at_ms: int) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for key in sorted(self._cells):
            name, start, scope_id, dims = json.loads(key)
            definition = self.definitions.get(name)
            if definition is None:  # removed from config since the state was written
                del self._cells[key]
                continue
            if start + definition.period_ms <= self.watermark_ms:
                records.extend(_records(definition, self._cells.pop(key), start, scope_id, dict(dims),
                                        computed_at_ms))
        return records

    def to_dict(self) -> dict[str, Any]:
        return {"allowed_lateness_ms": self.allowed_lateness_ms, "watermark_ms": self.watermark_ms,
                "cells": {key: dict(cell) for key, cell in self._cells.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], definitions: Sequence[MetricDefinition]) -> MetricsAggregator:
        aggregator = cls(definitions, int(data["allowed_lateness_ms"]))
        aggregator.watermark_ms = int(data["watermark_ms"])
        aggregator._cells = {key: dict(cell) for key, cell in data["cells"].items()}
        return aggregator


def _fold(definition: MetricDefinition, cell: dict[str, Any] | None, ts: npt.NDArray[np.int64],
          vals: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Merge samples of one period into a partial aggregate (plain data)."""
    if definition.kind == "counter":
        added = float(ts.size) if definition.count_samples else float(vals.sum())
        return {"value": (cell or {"value": 0.0})["value"] + added}
    if definition.kind == "gauge":
        last = ts.size - 1 - int(np.argmax(ts[::-1]))  # greatest time; ties: the later arrival
        if cell is not None and cell["timestamp_ms"] > int(ts[last]):
            return cell
        return {"timestamp_ms": int(ts[last]), "value": float(vals[last])}
    bounds = np.asarray(definition.buckets, dtype=np.float64)
    # Per bucket, the samples with value <= bound (cumulative), then +Inf = all of them.
    counts = [*np.searchsorted(np.sort(vals), bounds, side="right").tolist(), int(vals.size)]
    previous = cell or {"buckets": [0] * len(counts), "count": 0, "sum": 0.0}
    return {"buckets": [a + b for a, b in zip(previous["buckets"], counts, strict=True)],
            "count": previous["count"] + int(vals.size), "sum": previous["sum"] + float(vals.sum())}


def _records(definition: MetricDefinition, cell: Mapping[str, Any], start_ms: int, scope_id: str,
             dims: dict[str, str], computed_at_ms: int) -> list[dict[str, Any]]:
    end_ms = start_ms + definition.period_ms

    def record(name: str, value: float, unit: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        return kpi_record(definition.scope, scope_id, name, value, unit, start_ms, end_ms, computed_at_ms,
                          {**dims, **(extra or {})})

    if definition.kind in ("counter", "gauge"):
        return [record(definition.name, cell["value"], definition.unit)]
    bounds = [f"{bound:g}" for bound in definition.buckets] + ["+Inf"]
    return [
        *(record(f"{definition.name}_bucket", count, "count", {"le": le})
          for le, count in zip(bounds, cell["buckets"], strict=True)),
        record(f"{definition.name}_count", cell["count"], "count"),
        record(f"{definition.name}_sum", cell["sum"], definition.unit),
    ]
