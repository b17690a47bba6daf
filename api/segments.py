"""Seed 004's segments, on fleetstream's entities: vehicles selected by rules over their attributes and KPIs.

A rule is (field, operator, value). Fields are a closed list: the vehicle directory's attributes
(`vehicle_id`, `fleet_id`, `first_seen`, `last_seen`), `open_alerts` (episodes without a resolved event),
`dtcs` (distinct codes seen in the range), or `kpi:<name>`, the vehicle's latest value of that KPI in the
range (`kpi:health_score`, `kpi:uptime_pct`, ...). The whole segment is one SQL statement: fields and
operators map to fixed SQL, every value and KPI name is a bound parameter, nothing from the request is
spliced into the text. A vehicle without a value for a KPI matches no rule on that KPI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from fleetstream.api.analytics import DateRange
from fleetstream.api.rbac import Principal
from fleetstream.api.scoped import ScopedReader

__all__ = ["OPERATORS", "Rule", "Segment", "members"]

OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "IN", "not_in": "NOT IN",
             "contains": "LIKE"}

_ATTRIBUTES = {"vehicle_id": ("v.vehicle_id", "String"), "fleet_id": ("v.fleet_id", "String"),
               "first_seen": ("v.first_seen", "DateTime64(3)"), "last_seen": ("v.last_seen", "DateTime64(3)"),
               "open_alerts": ("ifNull(a.open_alerts, 0)", "Float64"), "dtcs": ("ifNull(d.dtcs, 0)", "Float64")}

Value = str | float | int | list[str] | list[float]


class Rule(BaseModel):
    field: Annotated[str, StringConstraints(pattern=r"^(vehicle_id|fleet_id|first_seen|last_seen|open_alerts|dtcs|"
                                                    r"kpi:[A-Za-z_][A-Za-z0-9_]{0,63})$")]
    operator: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains"]
    value: Value

    @field_validator("value")
    @classmethod
    def _bounded(cls, value: Value) -> Value:
        if isinstance(value, list) and len(value) > 1000:
            raise ValueError("at most 1000 values in a list")
        if isinstance(value, str) and len(value) > 200:
            raise ValueError("at most 200 characters")
        return value


class Segment(BaseModel):
    """Seed 004's segment: a name and its rules (`match: all` = AND, `any` = OR)."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    entity_type: Literal["vehicle"] = "vehicle"
    match: Literal["all", "any"] = "all"
    rules: list[Rule] = Field(min_length=1, max_length=20)


class SegmentError(ValueError):
    """A rule whose operator does not fit its value (a list for `in`, a number for `gt`, ...)."""


def _condition(i: int, rule: Rule, kpis: dict[str, int]) -> tuple[str, dict[str, Any]]:
    if rule.field.startswith("kpi:"):
        k = kpis.setdefault(rule.field[4:], len(kpis))
        column, ch_type, guard = f"k{k}.value", "Float64", f"k{k}.present = 1 AND "
    else:
        (column, ch_type), guard = _ATTRIBUTES[rule.field], ""
    op = OPERATORS[rule.operator]
    if rule.operator in ("in", "not_in"):
        if not isinstance(rule.value, list):
            raise SegmentError(f"{rule.field} {rule.operator}: the value is a list")
        return f"({guard}{column} {op} {{r{i}:Array({ch_type})}})", {f"r{i}": rule.value}
    if isinstance(rule.value, list):
        raise SegmentError(f"{rule.field} {rule.operator}: the value is one value, not a list")
    if rule.operator == "contains":
        if ch_type != "String":
            raise SegmentError(f"{rule.field}: contains applies to text fields")
        return f"({guard}position({column}, {{r{i}:String}}) > 0)", {f"r{i}": str(rule.value)}
    if ch_type == "Float64" and isinstance(rule.value, str):
        raise SegmentError(f"{rule.field} {rule.operator}: the value is a number")
    return f"({guard}{column} {op} {{r{i}:{ch_type}}})", {f"r{i}": rule.value}


def _kpi_join(k: int) -> str:
    return f"""
        LEFT JOIN (SELECT vehicle_id, argMax(value, period_end) AS value, 1 AS present FROM @kpis
                   WHERE scope = 'vehicle' AND name = {{kpi{k}:String}}
                     AND period_end > {{from:DateTime64(3)}} AND period_end <= {{to:DateTime64(3)}}
                   GROUP BY vehicle_id) AS k{k} ON k{k}.vehicle_id = v.vehicle_id"""


def members(reader: ScopedReader, who: Principal, segment: Segment, rng: DateRange) -> list[dict[str, Any]]:
    """The caller's vehicles in the segment, with the KPI values its rules looked at."""
    kpis: dict[str, int] = {}
    conditions, params = [], {**rng.params()}
    for i, rule in enumerate(segment.rules):
        sql, bound = _condition(i, rule, kpis)
        conditions.append(sql)
        params.update(bound)
    params.update({f"kpi{k}": name for name, k in kpis.items()})
    kpi_columns = "".join(f", if(k{k}.present = 1, k{k}.value, NULL) AS `kpi:{name}`"
                          for name, k in kpis.items() if name.isidentifier())
    joiner = " AND " if segment.match == "all" else " OR "
    sql = f"""
        SELECT v.vehicle_id AS vehicle_id, v.fleet_id AS fleet_id, ifNull(a.open_alerts, 0) AS open_alerts,
               ifNull(d.dtcs, 0) AS dtcs{kpi_columns}
        FROM @vehicles AS v
        LEFT JOIN (SELECT key AS vehicle_id, toFloat64(countIf(resolved = 0)) AS open_alerts FROM (
                       SELECT alert_id, any(key) AS key, max(event = 'resolved') AS resolved FROM @alerts
                       WHERE started < {{to:DateTime64(3)}} GROUP BY alert_id) GROUP BY vehicle_id) AS a
               ON a.vehicle_id = v.vehicle_id
        LEFT JOIN (SELECT vehicle_id, toFloat64(uniqExact(dtc_id)) AS dtcs FROM @dtcs
                   WHERE ts >= {{from:DateTime64(3)}} AND ts < {{to:DateTime64(3)}} GROUP BY vehicle_id) AS d
               ON d.vehicle_id = v.vehicle_id
        {"".join(_kpi_join(k) for k in kpis.values())}
        WHERE {joiner.join(conditions)}
        ORDER BY vehicle_id"""
    return reader.rows(sql, params, who)
