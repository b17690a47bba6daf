"""The ClickHouse sink: client, migrations, row mapping, the exactly-once consumer and the query pack.

`fleetstream db migrate|status` → `migrate`/`status`; `fleetstream sink clickhouse` → `ClickHouseSink`;
`fleetstream query NAME` → `run_query` and `render`.
"""

from fleetstream.sinks.clickhouse.consumer import GROUP_ID, ClickHouseSink, SinkStats, dlq_topic_for
from fleetstream.sinks.clickhouse.faults import Fault
from fleetstream.sinks.clickhouse.migrations import (
    Migration,
    MigrationError,
    MigrationStatus,
    load_migrations,
    migrate,
    status,
)
from fleetstream.sinks.clickhouse.queries import (
    FORMATS,
    NamedQuery,
    list_queries,
    load_query,
    render,
    run_query,
    run_sql,
)
from fleetstream.sinks.clickhouse.rows import ROUTES, Route, SourcedRecord, route, to_columns
from fleetstream.store.client import DATABASE, StoreLockedError, connect, embedded_path, is_embedded

__all__ = [
    "DATABASE",
    "FORMATS",
    "GROUP_ID",
    "ROUTES",
    "ClickHouseSink",
    "Fault",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "NamedQuery",
    "Route",
    "SinkStats",
    "SourcedRecord",
    "StoreLockedError",
    "connect",
    "dlq_topic_for",
    "embedded_path",
    "is_embedded",
    "list_queries",
    "load_migrations",
    "load_query",
    "migrate",
    "render",
    "route",
    "run_query",
    "run_sql",
    "status",
    "to_columns",
]
