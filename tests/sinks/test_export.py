"""`export_parquet`: Hive-style day partitions holding exactly the rows of each day, readable as one dataset."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from fleetstream.config import Settings, load_settings
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.inserts import insert_batch
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.sinks.clickhouse.rows import SourcedRecord
from fleetstream.sinks.export import arrow_type, day_range, export_parquet
from fleetstream.store.client import connect

DAY_MS = 86_400_000
DAY0 = (int(time.time() * 1000) // DAY_MS - 5) * DAY_MS  # midnight UTC five days ago


def signal(vehicle: str, start_ms: int, n: int) -> dict[str, Any]:
    return {"batch_id": f"b-{vehicle}-{start_ms}", "source": "sim", "org_id": "org", "fleet_id": "fleet",
            "vehicle_id": vehicle, "device_id": "d", "name": "EngineSpeed", "unit": "rpm",
            "samples": [{"timestamp_ms": start_ms + i * 250, "value": 1000.0 + i, "svalue": None, "flags": 0}
                        for i in range(n)]}


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Settings, dict[dt.date, set[tuple[str, int, float]]]]:
    """A store with samples on three consecutive days (plus one the day before and after, outside the range)."""
    store = tmp_path / "store"
    client = connect(f"chdb://{store}")
    expected: dict[dt.date, set[tuple[str, int, float]]] = {}
    try:
        migrate(client)
        for day in range(-1, 4):
            records = [SourcedRecord(signal(f"veh-{v}", DAY0 + day * DAY_MS + 3_600_000 * (v + 1) + 999, 7 + v),
                                     "t", 0, (day + 1) * 10 + v) for v in range(3)]
            insert_batch(client, "samples", rows.samples_arrow("signal_batch", records), f"t-0-{day}")
            if 0 <= day <= 2:
                date = dt.datetime.fromtimestamp((DAY0 + day * DAY_MS) / 1000, dt.UTC).date()
                expected[date] = {(r.value["vehicle_id"], s["timestamp_ms"], s["value"])
                                  for r in records for s in r.value["samples"]}
        insert_batch(client, "kpis", rows.to_columns("kpi", [SourcedRecord(
            {"scope": "vehicle", "scope_id": "veh-1", "name": "uptime", "value": 0.9, "unit": "ratio",
             "dimensions": {"shift": "day"}, "period_start_ms": DAY0 + 1000, "period_end_ms": DAY0 + 2000,
             "computed_at_ms": DAY0 + 3000}, "k", 0, 1)]), "k-0-1-1")
    finally:
        client.close()
    return load_settings(home=tmp_path, clickhouse={"dsn": f"chdb://{store}"}), expected


def test_three_days_become_three_hive_partitions_with_exactly_their_rows(
    seeded: tuple[Settings, dict[dt.date, set[tuple[str, int, float]]]], tmp_path: Path
) -> None:
    settings, expected = seeded
    first, last = min(expected), max(expected)
    result = export_parquet(settings, "samples", first, last, tmp_path / "out", chunk_seconds=4 * 3600)

    folders = sorted(p.name for p in (tmp_path / "out" / "samples").iterdir())
    assert folders == [f"date={d.isoformat()}" for d in sorted(expected)]
    assert all((tmp_path / "out" / "samples" / f / "part-0000.parquet").is_file() for f in folders)
    assert result.rows_per_day == {d: len(v) for d, v in expected.items()}

    dataset = ds.dataset(tmp_path / "out" / "samples", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.schema.field("ts").type == pa.timestamp("ms", "UTC")
    assert table.schema.field("kafka_partition").type == pa.uint16()
    got: dict[dt.date, set[tuple[str, int, float]]] = {}
    for row in table.to_pylist():
        day = dt.date.fromisoformat(str(row["date"]))
        got.setdefault(day, set()).add((row["vehicle_id"], int(row["ts"].timestamp() * 1000), row["value"]))
        assert row["ts"].date() == day  # each row sits in its own day's partition
    assert got == expected
    assert table.num_rows == sum(len(v) for v in expected.values())  # no duplicates either


def test_instant_range_and_rerun_replace_the_partition(
    seeded: tuple[Settings, dict[dt.date, set[tuple[str, int, float]]]], tmp_path: Path
) -> None:
    settings, expected = seeded
    day = min(expected)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    out = tmp_path / "out"
    export_parquet(settings, "samples", start, start + dt.timedelta(days=1), out)
    result = export_parquet(settings, "samples", start + dt.timedelta(hours=2), start + dt.timedelta(hours=3), out)
    # only veh-1's batch starts in that hour; the re-run replaced the day's file rather than appending to it
    assert result.rows_per_day == {day: 8}
    assert ds.dataset(out / "samples", format="parquet", partitioning="hive").count_rows() == 8


def test_map_columns_and_unknown_tables(
    seeded: tuple[Settings, dict[dt.date, set[tuple[str, int, float]]]], tmp_path: Path
) -> None:
    settings, expected = seeded
    result = export_parquet(settings, "kpis", min(expected), min(expected), tmp_path / "out")
    table = ds.dataset(tmp_path / "out" / "kpis", format="parquet", partitioning="hive").to_table()
    assert result.rows == 1
    assert table.column("dimensions").to_pylist() == [[("shift", "day")]]
    with pytest.raises(ValueError, match="no table"):
        export_parquet(settings, "nope", min(expected), min(expected), tmp_path / "out")
    with pytest.raises(ValueError, match="not a table name"):
        export_parquet(settings, "samples; DROP", min(expected), min(expected), tmp_path / "out")


def test_type_mapping_and_ranges() -> None:
    assert arrow_type("LowCardinality(String)") == pa.string()
    assert arrow_type("Nullable(DateTime64(3, 'UTC'))") == pa.timestamp("ms", "UTC")
    assert arrow_type("DateTime('UTC')") == pa.timestamp("s", "UTC")
    assert arrow_type("Array(String)") == pa.list_(pa.string())
    assert arrow_type("Map(String, String)") == pa.map_(pa.string(), pa.string())
    assert arrow_type("SimpleAggregateFunction(min, Nullable(Float64))") == pa.float64()
    assert arrow_type("Enum8('before' = 1, 'after' = 2)") == pa.string()
    lo, hi = day_range(dt.date(2024, 5, 1), dt.date(2024, 5, 3))
    assert (lo.isoformat(), hi.isoformat()) == ("2024-05-01T00:00:00+00:00", "2024-05-04T00:00:00+00:00")
    with pytest.raises(ValueError, match="empty range"):
        day_range(dt.date(2024, 5, 3), dt.date(2024, 5, 1))
