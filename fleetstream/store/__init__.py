"""The ClickHouse store, as every part reaches it: the sink writes it, the read API and the CLI read it.

- `client`: one way to connect (embedded chDB `chdb://<dir>` or a server `http(s)://`), with the embedded
  store's one-process lock reported clearly.
- `discovery`: finding the process that owns the embedded store (its discovery file).
- `query_server`: read-only SQL, in-process or through the owner's loopback endpoint (`query`), and that
  endpoint itself (`QueryServer`, which the sink runs).

Part of the core so that the sink and the read API share it without importing each other.
"""

from fleetstream.store.client import (
    DATABASE,
    ClickHouseUnreachable,
    Client,
    StoreLockedError,
    connect,
    embedded_path,
    is_embedded,
)
from fleetstream.store.discovery import DISCOVERY_FILE, discover, store_owner
from fleetstream.store.query_server import (
    QueryError,
    QueryResult,
    QueryServer,
    check_read_only,
    execute_read_only,
    query,
)

__all__ = [
    "DATABASE",
    "DISCOVERY_FILE",
    "ClickHouseUnreachable",
    "Client",
    "QueryError",
    "QueryResult",
    "QueryServer",
    "StoreLockedError",
    "check_read_only",
    "connect",
    "discover",
    "embedded_path",
    "execute_read_only",
    "is_embedded",
    "query",
    "store_owner",
]
