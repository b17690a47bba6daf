"""The query pack: `sinks/queries/<name>.sql`, run by name with named parameters, printed as table/CSV/JSON/Parquet.

Each file starts with a one-line `-- description` and uses ClickHouse query parameters
(`{vehicle:String}`, `{from:DateTime64(3)}`, ...), bound by the server, never spliced into the SQL.
Parameters the caller leaves out take `DEFAULTS` (no vehicle filter, the whole retained time range),
except those a `-- requires: name, ...` line lists; any other missing parameter is an error naming it.
Queries run through `fleetstream.store.query_server.query`, so `fleetstream query` works the same beside a running
sink, on an idle embedded store or on a server.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetstream.config import Settings
from fleetstream.errors import InvalidInput

__all__ = [
    "DEFAULTS",
    "FORMATS",
    "QUERIES_DIR",
    "NamedQuery",
    "QueryParameterError",
    "UnknownQuery",
    "list_queries",
    "load_query",
    "parse_instant",
    "render",
    "run_query",
    "run_sql",
]

QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
FORMATS = ("table", "csv", "json", "parquet")
DEFAULTS: dict[str, str] = {
    "vehicle": "",
    "from": "1970-01-01 00:00:00.000",
    "to": "2200-01-01 00:00:00.000",
    "late_seconds": "300",
}
_PARAM = re.compile(r"\{(\w+):([^{}]+)\}")
_REQUIRES = re.compile(r"^--\s*requires:\s*(.+)$", re.M)
_INTEGER = re.compile(r"^U?Int(8|16|32|64|128|256)$")


class UnknownQuery(InvalidInput, KeyError):
    """No query of the pack has that name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote it


class QueryParameterError(InvalidInput, ValueError):
    """A parameter the query does not take, one it needs, or a value its declared type cannot hold."""


def parse_instant(text: str) -> dt.datetime:
    """An ISO-8601 date or date-time as an aware UTC datetime: an offset (`+02:00`, `Z`) is honoured, none means UTC.

    Checked here, before any query runs, so a typo (`2026-11-31`, `yesterday`) is reported as the user's value
    and not as a ClickHouse parse error.
    """
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 date or time (e.g. 2026-11-30, 2026-11-30T10:00:00+02:00)") \
            from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _typed_value(name: str, ch_type: str, value: Any) -> Any:
    """`value` checked against the parameter's ClickHouse type; times become UTC `YYYY-MM-DD hh:mm:ss.fff`."""
    text = str(value).strip()
    try:
        if ch_type.startswith("DateTime"):
            return parse_instant(text).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if _INTEGER.match(ch_type):
            return _integer(text, unsigned=ch_type.startswith("U"))
        if ch_type.startswith("Float"):
            return _number(text)
    except ValueError as exc:
        raise QueryParameterError(f"parameter {name}: {exc}", f"the query declares it as {ch_type}") from None
    return value


def _integer(text: str, unsigned: bool) -> int:
    if not re.fullmatch(r"-?\d+", text) or (unsigned and int(text) < 0):
        raise ValueError(f"{text!r} is not {'a whole number >= 0' if unsigned else 'an integer'}")
    return int(text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


@dataclass(frozen=True)
class NamedQuery:
    """One query of the pack."""

    name: str
    description: str
    sql: str
    parameters: dict[str, str]
    """Parameter name → ClickHouse type, in order of first use."""
    required: frozenset[str] = frozenset()
    """Parameters that must be given even though they have a default elsewhere (e.g. the vehicle of a timeline)."""

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """The values to send: given ones (None = not given), else defaults; unknown names are errors."""
        unknown = sorted(set(k for k, v in params.items() if v is not None) - set(self.parameters))
        if unknown:
            raise QueryParameterError(f"query {self.name} has no parameter {', '.join(unknown)}",
                                      f"it takes {', '.join(self.parameters) or 'none'}")
        bound = {}
        for name, ch_type in self.parameters.items():
            value = params.get(name)
            if value is None and name not in self.required:
                value = DEFAULTS.get(name)
            if value is None:
                raise QueryParameterError(f"query {self.name} needs --{name} ({ch_type})")
            bound[name] = _typed_value(name, ch_type, value)
        return bound


def load_query(name: str, directory: Path = QUERIES_DIR) -> NamedQuery:
    """The query `name`; KeyError listing the known names when there is none."""
    path = directory / f"{name}.sql"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        known = ", ".join(q.name for q in list_queries(directory))
        raise UnknownQuery(f"no query named {name!r}", f"known: {known}")
    sql = path.read_text()
    first = sql.lstrip().splitlines()[0] if sql.strip() else ""
    description = first.removeprefix("--").strip() if first.startswith("--") else ""
    parameters: dict[str, str] = {}
    for param, type_ in _PARAM.findall(sql):
        parameters.setdefault(param, type_.strip())
    required = frozenset(n.strip() for line in _REQUIRES.findall(sql) for n in line.split(",") if n.strip())
    return NamedQuery(name, description, sql, parameters, required)


def list_queries(directory: Path = QUERIES_DIR) -> list[NamedQuery]:
    """Every query of the pack, by name."""
    return [load_query(p.stem, directory) for p in sorted(directory.glob("*.sql"))]


def run_query(settings: Settings, name: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Run the named query; returns column names and rows (JSON-ready values)."""
    from fleetstream.store.query_server import query

    named = load_query(name)
    result = query(settings, named.sql, named.bind(params or {}))
    return result.columns, result.rows


def run_sql(settings: Settings, sql: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Run one read statement (ad-hoc SQL, same routing and read-only rule as the pack); columns and rows."""
    from fleetstream.store.query_server import query

    result = query(settings, sql, params)
    return result.columns, result.rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
               for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    out = [line(columns), "  ".join("-" * w for w in widths), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(s.rstrip() for s in out) + "\n"


def _csv(columns: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v) for v in row]
                     for row in rows)
    return buf.getvalue()


def _parquet(columns: list[str], rows: list[list[Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def render(columns: list[str], rows: list[list[Any]], fmt: str = "table") -> str | bytes:
    """Format a result: aligned text, CSV with a header, JSON (a list of objects) or Parquet bytes."""
    if fmt == "table":
        return _table(columns, rows)
    if fmt == "csv":
        return _csv(columns, rows)
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2) + "\n"
    if fmt == "parquet":
        return _parquet(columns, rows)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
