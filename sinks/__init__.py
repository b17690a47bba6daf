"""Where validated and derived records leave Kafka: ClickHouse, the GraphQL backend, Parquet files.

- `clickhouse/`: the exactly-once ClickHouse sink (`ClickHouseSink`), migrations and the query pack.
- `graphql/`: the forwarder into the analytics GraphQL backend (`GraphQLForwarder`) and `contract_backend`,
  a local stand-in of that backend for the demo and tests.
- `export`: Parquet export of a day range (`export_parquet`).

How the store is reached (client, discovery, read-only queries) is the core's `fleetstream.store`, shared
with the read API.
"""

from typing import TYPE_CHECKING

from fleetstream.exports import lazy_exports

if TYPE_CHECKING:
    from fleetstream.sinks.clickhouse import ClickHouseSink, list_queries, migrate, run_query, run_sql, status
    from fleetstream.sinks.export import export_parquet
    from fleetstream.sinks.graphql import GraphQLForwarder

__all__ = [
    "ClickHouseSink",
    "GraphQLForwarder",
    "export_parquet",
    "list_queries",
    "migrate",
    "run_query",
    "run_sql",
    "status",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "fleetstream.sinks.clickhouse": ["ClickHouseSink", "list_queries", "migrate", "run_query", "run_sql", "status"],
    "fleetstream.sinks.export": ["export_parquet"],
    "fleetstream.sinks.graphql": ["GraphQLForwarder"],
})
