"""`fleetstream bench sink`: rows/s of the sink's real insert path against a plain columnar insert.

For each batch size, in a fresh migrated store (a temporary chDB directory unless a DSN is given), it measures

* `sink`: what the sink does per batch: `rows.samples_arrow` (Arrow from the decoded batches' columns) and
  `inserts.insert_batch` (Arrow insert into `samples` with the deduplication token, so the two rollup
  materialized views run too), and
* `baseline`: a plain clickhouse-connect column-oriented insert of the same rows (already as column lists)
  into a MergeTree table with the same columns, no views, no token.

Every repeat inserts new rows (new timestamps and offsets), so nothing is deduplicated away. Figures are
median, min and max rows/s over the repeats; DESIGN.md's reference is ~1M rows/s for 100k-row column inserts.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleetstream.schemas.codec import Codec
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.inserts import insert_batch
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.sinks.clickhouse.rows import SourcedRecord
from fleetstream.store.client import DATABASE, Client, connect, is_embedded

__all__ = ["SAMPLES_PER_RECORD", "bench_sink", "signal_records", "to_table"]

SAMPLES_PER_RECORD = 100
"""Samples per Kafka record, as the producers batch them."""
_BASELINE = "bench_samples_plain"


def signal_records(n_rows: int, seq: int, start_ms: int) -> list[SourcedRecord]:
    """Signal batches of `n_rows` samples (100 per record, 50 vehicles, 20 channels), new rows per `seq`, in the
    form the sink holds them: decoded from their Avro bytes into `SampleBatch` columns (untimed, like the
    baseline's column lists)."""
    codec = Codec()
    records = []
    for i in range(max(1, n_rows // SAMPLES_PER_RECORD)):
        t0 = start_ms + (seq * 10_000_000 + i) * 1_000
        value = {"batch_id": f"bench-{seq}-{i}", "source": "bench", "org_id": "org", "fleet_id": "fleet",
                 "vehicle_id": f"veh-{i % 50}", "device_id": f"dev-{i % 50}", "name": f"ch{i % 20}", "unit": "rpm",
                 "samples": [{"timestamp_ms": t0 + j, "value": float(j), "svalue": None, "flags": 0}
                             for j in range(min(SAMPLES_PER_RECORD, n_rows))]}
        batch = codec.decode_batch(codec.encode("signal_batch", value), "signal_batch")
        records.append(SourcedRecord(batch, "bench.signals", 0, seq * 1_000_000 + i))
    return records


def _summary(seconds: list[float], n_rows: int) -> dict[str, float]:
    rates = [n_rows / s for s in seconds]
    return {"median_rows_s": statistics.median(rates), "min_rows_s": min(rates), "max_rows_s": max(rates),
            "median_s": statistics.median(seconds)}


def _run(client: Client, batch_sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    client.command(f"DROP TABLE IF EXISTS {DATABASE}.{_BASELINE}")
    client.command(f"CREATE TABLE {DATABASE}.{_BASELINE} AS {DATABASE}.samples "
                   "ENGINE = MergeTree PARTITION BY toDate(ts) ORDER BY (org_id, vehicle_id, channel, ts)")
    start_ms = (int(time.time() * 1000) // 86_400_000 - 2) * 86_400_000
    results, seq = [], 0
    for size in batch_sizes:
        sink_s, base_s = [], []
        n_rows = 0
        for round_ in range(repeats + 1):  # round 0 warms caches and the size's code paths: not counted
            seq += 1
            records = signal_records(size, seq, start_ms)
            columns = rows.to_columns("signal_batch", records)  # the baseline gets its column lists for free
            n_rows = rows.row_count(columns)
            started = time.perf_counter()
            table = rows.samples_arrow("signal_batch", records)
            insert_batch(client, "samples", table, f"bench.signals-0-{seq}-{seq}")
            sink_elapsed = time.perf_counter() - started
            started = time.perf_counter()
            client.insert(f"{DATABASE}.{_BASELINE}", list(columns.values()), column_names=list(columns),
                          column_oriented=True, settings={"throw_on_max_partitions_per_insert_block": 0})
            base_elapsed = time.perf_counter() - started
            if round_:
                sink_s.append(sink_elapsed)
                base_s.append(base_elapsed)
        sink, base = _summary(sink_s, n_rows), _summary(base_s, n_rows)
        results.append({"batch_rows": n_rows, "repeats": repeats, "sink": sink, "baseline": base,
                        "sink_vs_baseline": sink["median_rows_s"] / base["median_rows_s"]})
    client.command(f"DROP TABLE IF EXISTS {DATABASE}.{_BASELINE}")
    return results


def bench_sink(dsn: str | None = None, batch_sizes: Sequence[int] = (1_000, 10_000, 100_000),
               repeats: int = 3) -> dict[str, Any]:
    """Measure; `dsn` None = a fresh temporary chDB store (removed afterwards). Returns a JSON-ready dict."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-") as tmp:
        target = dsn or f"chdb://{Path(tmp) / 'store'}"
        client = connect(target)
        try:
            migrate(client)
            results = _run(client, batch_sizes, repeats)
        finally:
            client.close()
    return {"store": "chdb (temporary)" if dsn is None else ("chdb" if is_embedded(target) else "server"),
            "table": "samples (+ samples_1m, samples_1h views)", "results": results}


def to_table(report: dict[str, Any]) -> str:
    """The report as aligned text: one line per batch size."""
    head = f"{'batch rows':>10}  {'sink rows/s (median, min-max)':>34}  {'baseline rows/s':>34}  {'ratio':>5}"
    lines = [f"insert into {report['table']} on {report['store']}", head, "-" * len(head)]

    def cell(s: dict[str, float]) -> str:
        return f"{s['median_rows_s']:>12,.0f} ({s['min_rows_s']:,.0f}-{s['max_rows_s']:,.0f})"

    for r in report["results"]:
        lines.append(f"{r['batch_rows']:>10,}  {cell(r['sink']):>34}  {cell(r['baseline']):>34}  "
                     f"{r['sink_vs_baseline']:>5.2f}")
    return "\n".join(lines) + "\n"
