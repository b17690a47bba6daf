"""One batch insert, as the sink does it: column lists or an Arrow table, with the deduplication token.

Shared by the sink and `benchmarks/sink.py`, so the benchmark measures the code that runs in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fleetstream.sinks.clickhouse.rows import Columns, row_count
from fleetstream.store.client import DATABASE, Client

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["INSERT_ATTEMPTS", "dedup_settings", "insert_batch", "insert_retrying", "size_of"]

log = logging.getLogger(__name__)

INSERT_ATTEMPTS = 5

def dedup_settings(token: str) -> dict[str, Any]:
    """Insert settings that make a replay of the same offset range a no-op, in the table and its rollups."""
    return {
        "insert_deduplicate": 1,
        "insert_deduplication_token": token,
        # the rollup views' blocks are deduplicated too, else a replay stored once in samples counts twice there
        "deduplicate_blocks_in_dependent_materialized_views": 1,
        # the two rollup views of samples run side by side instead of one after the other (~12% faster at 100k)
        "parallel_view_processing": 1,
        # old file imports span many days: more partitions than the default 100 is expected, not an error
        "throw_on_max_partitions_per_insert_block": 0,
    }


def size_of(data: Columns | pa.Table) -> int:
    """Rows in a batch of either shape."""
    return row_count(data) if isinstance(data, dict) else int(data.num_rows)


def insert_batch(client: Client, table: str, data: Columns | pa.Table, token: str) -> None:
    """Insert one batch into `fleetstream.<table>` with the deduplication token `token` (one attempt)."""
    if isinstance(data, dict):
        client.insert(f"{DATABASE}.{table}", list(data.values()), column_names=list(data), column_oriented=True,
                      settings=dedup_settings(token))
    else:
        client.insert_arrow(f"{DATABASE}.{table}", data, settings=dedup_settings(token))


def insert_retrying(client: Client, table: str, data: Columns | pa.Table, token: str,
                    on_retry: Callable[[str], None] = lambda _error: None,
                    sleep: Callable[[float], None] = time.sleep) -> float:
    """Insert one batch, retrying with the same token (backoff 0.5 s doubling to 8 s); returns the seconds the
    successful attempt took. The last failure is raised. An insert that did land before a retry is
    deduplicated by the token, so retrying never stores a batch twice."""
    for attempt in range(1, INSERT_ATTEMPTS + 1):
        started = time.perf_counter()
        try:
            insert_batch(client, table, data, token)
        except Exception as exc:
            if attempt == INSERT_ATTEMPTS:
                raise
            delay = min(0.5 * 2 ** (attempt - 1), 8.0)
            log.warning("insert of %d rows into %s failed (attempt %d, retry in %.1f s): %s", size_of(data), table,
                        attempt, delay, exc)
            on_retry(f"insert into {table}: {exc}")
            sleep(delay)
            continue
        return time.perf_counter() - started
    raise AssertionError("unreachable: the last attempt returns or raises")
