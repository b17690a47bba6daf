"""`fleetstream export`: a table's rows over a time range as Parquet in Hive-style day partitions.

Layout: `<out_dir>/<table>/date=YYYY-MM-DD/part-0000.parquet`, which BigQuery external tables, Spark, DuckDB and
`pyarrow.dataset(..., partitioning="hive")` read as one table with a `date` column. The export streams: one day
at a time, and within a day one query per `chunk_seconds` written as its own row group, so memory holds one
chunk, never the range. Queries go through `fleetstream.store.query_server.query` like `fleetstream query` (the running
sink's loopback endpoint, else the embedded store, else the server), read-only.

Types come from the table (`system.columns`), not from the values: times are selected as integer epoch units
and become Arrow timestamps (UTC) without parsing strings; `Date` becomes date32; `LowCardinality`, `Enum` and
`String` become strings; `Array`, `Map` and `Nullable` keep their structure. A day without rows writes no
partition. A partition file is written under a temporary name and renamed, so a re-run replaces it whole.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetstream.config import Settings
from fleetstream.errors import InvalidInput
from fleetstream.store.client import DATABASE

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ExportError", "ExportResult", "arrow_type", "day_range", "export_parquet"]

log = logging.getLogger(__name__)

DAY = dt.timedelta(days=1)
_IDENT = re.compile(r"^\w+$")
_EPOCH_FUNCS = {0: "toUnixTimestamp", 3: "toUnixTimestamp64Milli", 6: "toUnixTimestamp64Micro",
                9: "toUnixTimestamp64Nano"}
_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}
_INTS = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"}


class ExportError(InvalidInput, ValueError):
    """The export was asked for something the store cannot give: an unknown table, one without time, no range."""


@dataclass
class ExportResult:
    """What an export wrote: rows per day and the files."""

    table: str
    rows_per_day: dict[dt.date, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.rows_per_day.values())

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "files": [str(f) for f in self.files],
                "rows_per_day": {d.isoformat(): n for d, n in self.rows_per_day.items()}}


def _unwrap(ch_type: str, wrapper: str) -> str | None:
    prefix = f"{wrapper}("
    return ch_type[len(prefix):-1] if ch_type.startswith(prefix) and ch_type.endswith(")") else None


def _split_args(inner: str) -> list[str]:
    """Top-level comma-separated arguments of a type (`String, Array(UInt8)` → two)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


def _precision(ch_type: str) -> int | None:
    """Sub-second digits of a DateTime/DateTime64 type, None for other types."""
    if ch_type == "DateTime" or ch_type.startswith("DateTime("):
        return 0
    inner = _unwrap(ch_type, "DateTime64")
    return int(_split_args(inner)[0]) if inner is not None else None


def arrow_type(ch_type: str) -> pa.DataType:
    """The Arrow type a ClickHouse column of `ch_type` is exported as (times as UTC timestamps)."""
    import pyarrow as pa

    for wrapper in ("LowCardinality", "Nullable", "SimpleAggregateFunction"):
        inner = _unwrap(ch_type, wrapper)
        if inner is not None:
            return arrow_type(_split_args(inner)[-1])
    precision = _precision(ch_type)
    if precision is not None:
        return pa.timestamp(_UNITS[precision], "UTC")
    if ch_type in ("Date", "Date32"):
        return pa.date32()
    if ch_type in _INTS:
        return getattr(pa, ch_type.lower())()
    if ch_type in ("Float32", "Float64"):
        return pa.float32() if ch_type == "Float32" else pa.float64()
    if ch_type == "Bool":
        return pa.bool_()
    if ch_type == "String" or ch_type.startswith(("Enum8(", "Enum16(", "FixedString(", "UUID")):
        return pa.string()
    inner = _unwrap(ch_type, "Array")
    if inner is not None:
        return pa.list_(arrow_type(inner))
    inner = _unwrap(ch_type, "Map")
    if inner is not None:
        key, value = _split_args(inner)
        return pa.map_(arrow_type(key), arrow_type(value))
    raise ValueError(f"no Parquet mapping for ClickHouse type {ch_type}")


def _select_expr(name: str, ch_type: str) -> str:
    """How a column is selected: times as integer epoch units (no string parsing), dates as day numbers."""
    core = ch_type
    for wrapper in ("LowCardinality", "Nullable"):
        core = _unwrap(core, wrapper) or core
    precision = _precision(core)
    if precision is not None:
        return f"{_EPOCH_FUNCS[precision]}(`{name}`)"
    if core in ("Date", "Date32"):
        return f"toInt32(`{name}`)"
    return f"`{name}`"


def _columns(settings: Settings, table: str) -> tuple[list[tuple[str, str]], str]:
    """The table's (name, type) columns in order and its time column (the one its partition key is made of)."""
    from fleetstream.store.query_server import query

    params = {"db": DATABASE, "t": table}
    cols = query(settings, "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} "
                           "ORDER BY position", params).rows
    if not cols:
        raise ExportError(f"no table {DATABASE}.{table}", _exportable(settings))
    key_rows = query(settings, "SELECT partition_key FROM system.tables WHERE database = {db:String} "
                               "AND name = {t:String}", params).rows
    partition_key = str(key_rows[0][0]) if key_rows else ""
    timed = {str(n) for n, t in cols if _precision(str(t)) is not None or str(t) in ("Date", "Date32")}
    time_column = next((w for w in re.findall(r"\w+", partition_key) if w in timed), None)
    if time_column is None:
        raise ExportError(f"{DATABASE}.{table} is not partitioned by a time column (partition key {partition_key!r})",
                          _exportable(settings))
    return [(str(n), str(t)) for n, t in cols], time_column


def _exportable(settings: Settings) -> str:
    """The hint for a table that cannot be exported: the ones that can (partitioned by time), or how to get them."""
    from fleetstream.store.query_server import query

    names = query(settings, "SELECT name FROM system.tables WHERE database = {db:String} AND partition_key != '' "
                            "AND NOT startsWith(name, '.') ORDER BY name", {"db": DATABASE}).rows
    if not names:
        return "the store has no tables yet: `fleetstream db migrate` creates them, the sink fills them"
    return "tables with a time partition: " + ", ".join(str(row[0]) for row in names)


def day_range(from_: dt.date | dt.datetime, to: dt.date | dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The half-open UTC interval to export: dates are whole days (`to` included), datetimes are instants."""
    def instant(value: dt.date | dt.datetime, end: bool) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        start = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return start + DAY if end else start

    lo, hi = instant(from_, end=False), instant(to, end=True)
    if hi <= lo:
        raise ExportError(f"empty range: {from_} to {to}", "--to must come after --from; a date as --to is included")
    return lo, hi


def _days(lo: dt.datetime, hi: dt.datetime) -> Iterator[tuple[dt.date, dt.datetime, dt.datetime]]:
    day = lo.date()
    while True:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        if start >= hi:
            return
        yield day, max(start, lo), min(start + DAY, hi)
        day += DAY


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def export_parquet(settings: Settings, table: str, from_: dt.date | dt.datetime, to: dt.date | dt.datetime,
                   out_dir: Path, chunk_seconds: int = 3600) -> ExportResult:
    """Write `table`'s rows with time in [from_, to] to `out_dir/<table>/date=YYYY-MM-DD/part-0000.parquet`.

    Dates bound whole days (both included); datetimes are exact instants (`to` excluded). Rows of one day are
    ordered by time; one query and one row group per `chunk_seconds`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fleetstream.store.query_server import query

    if not _IDENT.match(table):
        raise ExportError(f"not a table name: {table!r}", "letters, digits and _ only")
    columns, time_column = _columns(settings, table)
    schema = pa.schema([pa.field(name, arrow_type(ch_type)) for name, ch_type in columns])
    select = ", ".join(f"{_select_expr(name, ch_type)} AS `{name}`" for name, ch_type in columns)
    # filter in a subquery: the outer aliases (`ts` as epoch milliseconds) would shadow the columns in WHERE
    sql = (f"SELECT {select} FROM (SELECT * FROM {DATABASE}.`{table}` "
           f"WHERE `{time_column}` >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC') "
           f"AND `{time_column}` < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')) ORDER BY `{time_column}`")
    lo, hi = day_range(from_, to)
    result = ExportResult(table)
    step = dt.timedelta(seconds=chunk_seconds)
    for day, day_lo, day_hi in _days(lo, hi):
        folder = out_dir / table / f"date={day.isoformat()}"
        target, tmp = folder / "part-0000.parquet", folder / ".part-0000.parquet.tmp"
        writer: pq.ParquetWriter | None = None
        rows = 0
        try:
            chunk_lo = day_lo
            while chunk_lo < day_hi:
                chunk_hi = min(chunk_lo + step, day_hi)
                got = query(settings, sql, {"lo": _ms(chunk_lo), "hi": _ms(chunk_hi)}).rows
                chunk_lo = chunk_hi
                if not got:
                    continue
                batch = pa.table([pa.array([row[i] for row in got], field.type) for i, field in enumerate(schema)],
                                 schema=schema)
                if writer is None:
                    folder.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(batch)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            continue
        tmp.replace(target)
        result.rows_per_day[day] = rows
        result.files.append(target)
        log.info("exported %d rows of %s for %s to %s", rows, table, day, target)
    return result
