"""Seed 004's metrics: definitions (counter, gauge, histogram, with a unit and dimensions), recorded values, and
aggregation by minute, hour or day.

A value is checked against its definition before it is published, never adjusted: a value of an unknown
metric, with an undeclared dimension, or a negative counter increment is refused with the reason.
`aggregate` reads either the recorded values of a custom metric (`source: custom`) or a KPI the stream
worker computes (`source: kpi`, e.g. `health_score`), with the same aggregations and granularities.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from fleetstream.api.analytics import DateRange
from fleetstream.api.events import utc_ms
from fleetstream.api.rbac import Principal
from fleetstream.api.scoped import ScopedReader

__all__ = [
    "AGGREGATIONS",
    "GRANULARITIES",
    "AggregateRequest",
    "MetricDefinition",
    "MetricValueIn",
    "RejectedValue",
    "aggregate",
    "check_value",
    "value_record",
]

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]

AGGREGATIONS = {"sum": "sum(value)", "avg": "avg(value)", "min": "min(value)", "max": "max(value)",
                "count": "toFloat64(count())", "p95": "quantileExact(0.95)(value)"}
"""Aggregation method → its ClickHouse expression (a closed list: the request picks a key, never SQL)."""

GRANULARITIES = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}


class MetricDefinition(BaseModel):
    """Seed 004's `POST /metrics/` body."""

    name: Name
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    metric_type: Literal["counter", "gauge", "histogram"]
    unit: Annotated[str, StringConstraints(max_length=50)] = ""
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    dimensions: list[Name] = Field(default_factory=list, max_length=20,
                                   description="The dimension names its values may carry.")
    tags: dict[str, Annotated[str, StringConstraints(max_length=200)]] = Field(default_factory=dict)


class MetricValueIn(BaseModel):
    """Seed 004's `POST /metrics/values` body."""

    metric_id: Name = Field(description="The metric's name.")
    value: float
    dimensions: dict[Name, Annotated[str, StringConstraints(max_length=200)]] = Field(default_factory=dict)
    timestamp: dt.datetime | None = None


class MetricValueBatch(BaseModel):
    values: list[MetricValueIn] = Field(min_length=1)


class RejectedValue(ValueError):
    """A value its definition does not allow; the message says why."""


def check_value(value: MetricValueIn, definition: dict[str, Any]) -> None:
    """Raise RejectedValue when `definition` does not allow `value` (never change it to fit)."""
    if not math.isfinite(value.value):
        raise RejectedValue(f"{value.metric_id}: value {value.value} is not a finite number")
    if definition["metric_type"] == "counter" and value.value < 0:
        raise RejectedValue(f"{value.metric_id} is a counter: an increment cannot be negative ({value.value})")
    unknown = sorted(set(value.dimensions) - set(definition.get("dimensions", [])))
    if unknown:
        declared = ", ".join(definition.get("dimensions", [])) or "none"
        raise RejectedValue(f"{value.metric_id}: undeclared dimension(s) {', '.join(unknown)} (declared: {declared})")


def value_record(value: MetricValueIn, definition: dict[str, Any], who: Principal) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {"value_id": uuid.uuid4().hex, "org_id": who.org_id, "metric": value.metric_id,
            "metric_type": definition["metric_type"], "value": value.value, "unit": definition.get("unit", ""),
            "dimensions": dict(value.dimensions),
            "timestamp_ms": utc_ms(value.timestamp) if value.timestamp else now_ms,
            "recorded_by": who.user_id}


class AggregateRequest(BaseModel):
    """Seed 004's `POST /metrics/aggregate` body, plus dimension filters and grouping."""

    metric_id: Name
    source: Literal["custom", "kpi"] = Field(default="custom", description="custom: recorded values of a defined "
                                             "metric; kpi: a KPI of the stream worker (per vehicle).")
    aggregation_method: Literal["sum", "avg", "min", "max", "count", "p95"] = "sum"
    granularity: Literal["minute", "hour", "day"] = "hour"
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    filters: dict[Name, Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict, description="Dimension = value, all must match.")
    group_by: list[Name] = Field(default_factory=list, max_length=5, description="Dimensions to split by.")


_SOURCES = {
    "custom": ("@metric_values", "metric", "ts", "dimensions"),
    "kpi": ("(SELECT *, mapUpdate(dimensions, map('vehicle_id', vehicle_id)) AS dims FROM @kpis "
            "WHERE scope = 'vehicle')", "name", "period_end", "dims"),
}
"""source → (what is read, its metric-name column, time column, dimensions map)."""


def aggregate(reader: ScopedReader, who: Principal, spec: AggregateRequest, rng: DateRange) -> dict[str, Any]:
    """One row per (bucket, group): the bucket's start and the aggregated value; every input is bound."""
    source, name_col, time_col, dims = _SOURCES[spec.source]
    bucket = f"{GRANULARITIES[spec.granularity]}({time_col})"
    filters = " AND ".join(f"{dims}[{{fk{i}:String}}] = {{fv{i}:String}}" for i in range(len(spec.filters)))
    groups = [f"{dims}[{{gk{i}:String}}] AS g{i}" for i in range(len(spec.group_by))]
    select = ", ".join([f"{bucket} AS bucket", *groups, f"{AGGREGATIONS[spec.aggregation_method]} AS value",
                        "count() AS samples"])
    keys = ", ".join(["bucket", *(f"g{i}" for i in range(len(spec.group_by)))])
    sql = f"""
        SELECT {select} FROM {source}
        WHERE {name_col} = {{metric:String}}
          AND {time_col} >= {{from:DateTime64(3)}} AND {time_col} < {{to:DateTime64(3)}}
          {"AND " + filters if filters else ""}
        GROUP BY {keys} ORDER BY {keys}"""
    params: dict[str, Any] = {**rng.params(), "metric": spec.metric_id,
                              **{f"fk{i}": k for i, k in enumerate(spec.filters)},
                              **{f"fv{i}": v for i, v in enumerate(spec.filters.values())},
                              **{f"gk{i}": k for i, k in enumerate(spec.group_by)}}
    rows = reader.rows(sql, params, who)
    points = [{"bucket": r["bucket"], "value": r["value"], "samples": r["samples"],
               **({"group": {k: r[f"g{i}"] for i, k in enumerate(spec.group_by)}} if spec.group_by else {})}
              for r in rows]
    return {"metric_id": spec.metric_id, "source": spec.source, "aggregation_method": spec.aggregation_method,
            "granularity": spec.granularity, "range": rng.as_dict(), "points": points}
