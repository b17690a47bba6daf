"""The one query layer: every read of the API passes here, and here the caller's tenant and vehicles are applied.

Endpoint SQL never names a table. It reads *sources*, written `@name` (`@samples`, `@kpis`, `@alerts`, ...),
and this layer replaces each with a subquery that keeps only the caller's org and vehicle scope, bound as
query parameters (`{__orgs:Array(String)}`, `{__vehicles:Array(String)}`, `{__all:UInt8}`), never spliced
into the text. A statement that names a database table itself (`fleetstream.x`, `system.x`) or passes a
parameter of the reserved `__` namespace is refused before it runs, so no endpoint can read around the scope.

Tables that carry no org (kpis, alerts, window_aggregates: their records are keyed by vehicle only) are
scoped through the vehicle directory (migration 017): a vehicle id belongs to an org when every directory
row of that id is in the org. An id seen in two orgs therefore belongs to neither: its unowned rows are
shown to nobody rather than to both.

Records that carry no org at all (dyno stations, whose samples have org_id '') belong to `default_org`
when one is configured, else to nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fleetstream.api.rbac import Principal
from fleetstream.api.store import QueryResult, StoreReader

__all__ = ["SOURCES", "Scope", "ScopeError", "ScopedReader"]


class ScopeError(ValueError):
    """An endpoint's statement tried to read around the scope (a programming error, never the caller's)."""


@dataclass(frozen=True)
class Scope:
    """The rows a caller may see: one org (plus unowned records when it is the default org) and vehicles."""

    orgs: tuple[str, ...]
    vehicle_ids: tuple[str, ...]
    all_vehicles: bool

    @classmethod
    def of(cls, principal: Principal, default_org: str | None = None) -> Scope:
        orgs = (principal.org_id, "") if default_org and principal.org_id == default_org else (principal.org_id,)
        vehicles = tuple(v for v in principal.vehicle_ids if v != "*")
        return cls(orgs, vehicles, principal.all_vehicles)

    def parameters(self) -> dict[str, Any]:
        return {"__orgs": list(self.orgs), "__vehicles": list(self.vehicle_ids), "__all": int(self.all_vehicles)}

    @property
    def cache_key(self) -> str:
        return f"{','.join(self.orgs)}|{int(self.all_vehicles)}|{','.join(sorted(self.vehicle_ids))}"


_ORGS = "{__orgs:Array(String)}"
_IN_VEHICLES = "({__all:UInt8} = 1 OR has({__vehicles:Array(String)}, %s))"
_DIRECTORY = (
    "(SELECT vehicle_id FROM fleetstream.vehicle_directory WHERE " + _IN_VEHICLES % "vehicle_id"
    + " GROUP BY vehicle_id HAVING countIf(org_id NOT IN " + _ORGS + ") = 0)"
)


def _org_table(table: str, vehicle_column: str = "vehicle_id") -> str:
    return (f"(SELECT * FROM fleetstream.{table} WHERE org_id IN {_ORGS} AND "
            f"{_IN_VEHICLES % vehicle_column})")


def _keyed_table(table: str, final: bool = False) -> str:
    return f"(SELECT * FROM fleetstream.{table}{' FINAL' if final else ''} WHERE key IN {_DIRECTORY})"


SOURCES: dict[str, str] = {
    "samples": _org_table("samples"),
    "samples_1m": _org_table("samples_1m"),
    "samples_1h": _org_table("samples_1h"),
    "dtcs": _org_table("dtcs"),
    "gps_points": _org_table("gps_points"),
    "alert_acks": _org_table("alert_acks", "key"),
    "audit_log": f"(SELECT * FROM fleetstream.audit_log WHERE org_id IN {_ORGS})",
    "alerts": _keyed_table("alerts"),
    "windows": _keyed_table("window_aggregates"),
    "dead_letters": _keyed_table("dead_letters", final=True),  # re-sent dead letters collapse only with FINAL
    # one branch per scope, so a vehicle KPI is selected by the sort key's (scope, scope_id) and its dimensions
    # map is never read; a dyno run's KPI belongs to its station
    "kpis": ("(SELECT *, scope_id AS vehicle_id FROM fleetstream.kpis "
             f"WHERE scope = 'vehicle' AND scope_id IN {_DIRECTORY} "
             "UNION ALL SELECT *, dimensions['station_id'] AS vehicle_id FROM fleetstream.kpis "
             f"WHERE scope = 'run' AND dimensions['station_id'] IN {_DIRECTORY})"),
    # seed 004's side: events carry an org (and maybe a vehicle); custom metric values and definitions belong to
    # the whole org, so a caller limited to some vehicles sees none of their values
    "events": (f"(SELECT * FROM fleetstream.analytics_events FINAL WHERE org_id IN {_ORGS} AND "
               f"{_IN_VEHICLES % 'vehicle_id'})"),
    "metric_values": f"(SELECT * FROM fleetstream.metric_values WHERE org_id IN {_ORGS} AND {{__all:UInt8}} = 1)",
    "definitions": f"(SELECT * FROM fleetstream.analytics_definitions FINAL WHERE org_id IN {_ORGS})",
    "vehicles": ("(SELECT d.vehicle_id AS vehicle_id, argMax(d.fleet_id, d.last_seen) AS fleet_id, "
                 "min(d.first_seen) AS first_seen, max(d.last_seen) AS last_seen "
                 "FROM fleetstream.vehicle_directory AS d WHERE " + _IN_VEHICLES % "d.vehicle_id"
                 + " GROUP BY d.vehicle_id HAVING countIf(d.org_id NOT IN " + _ORGS + ") = 0)"),
}
"""Source name → the scoped subquery that replaces `@name`."""

_SOURCE = re.compile(r"@(\w+)")
_RAW_TABLE = re.compile(r"\b(fleetstream|system|information_schema)\s*\.", re.I)
_TABLE_FUNCTION = re.compile(r"\b(file|url|s3|remote|remoteSecure|cluster|input|executable|mysql|postgresql|hdfs|"
                             r"jdbc|odbc|azureBlobStorage|deltaLake|iceberg|merge|numbers_mt)\s*\(", re.I)


def expand(sql: str) -> str:
    """`sql` with its `@sources` replaced by scoped subqueries; ScopeError if it could read around them."""
    if _RAW_TABLE.search(sql):
        raise ScopeError("endpoint SQL must read @sources, not tables")
    if _TABLE_FUNCTION.search(sql):
        raise ScopeError("endpoint SQL must not call table functions")
    used = _SOURCE.findall(sql)
    if not used:
        raise ScopeError("endpoint SQL reads no @source")
    unknown = sorted(set(used) - SOURCES.keys())
    if unknown:
        raise ScopeError(f"unknown source(s) {', '.join('@' + u for u in unknown)}")
    return _SOURCE.sub(lambda m: SOURCES[m.group(1)], sql)


class ScopedReader:
    """The only way endpoints read: `run(sql, params, principal)` with the scope bound by this layer."""

    def __init__(self, reader: StoreReader, default_org: str | None = None):
        self._reader = reader
        self.default_org = default_org

    def ping(self) -> str:
        """`SELECT 1` on the store (readiness); returns how the store is reached."""
        self._reader.query("SELECT 1", {})
        return self._reader.mode

    def close(self) -> None:
        self._reader.close()

    def scope_of(self, principal: Principal) -> Scope:
        return Scope.of(principal, self.default_org)

    def run(self, sql: str, params: dict[str, Any], principal: Principal) -> QueryResult:
        reserved = sorted(k for k in params if k.startswith("__"))
        if reserved:
            raise ScopeError(f"reserved parameter name(s) {', '.join(reserved)}")
        return self._reader.query(expand(sql), {**params, **self.scope_of(principal).parameters()})

    def rows(self, sql: str, params: dict[str, Any], principal: Principal) -> list[dict[str, Any]]:
        """The result as a list of {column: value}."""
        result = self.run(sql, params, principal)
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]
