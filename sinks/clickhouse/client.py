"""One way to reach ClickHouse: the embedded engine (`chdb://<dir>`) or a server (`http(s)://host:8123`).

Both give a clickhouse-connect `Client` with the same API, so nothing above this module knows which one
it talks to. The embedded engine locks its data directory to one process (see DESIGN.md); callers that
may run beside the sink go through `sinks.query_server.query` instead of opening the store themselves.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from fleetstream.errors import FleetstreamError, StoreError

__all__ = [
    "DATABASE",
    "ClickHouseUnreachable",
    "Client",
    "StoreLockedError",
    "connect",
    "embedded_path",
    "is_embedded",
]

log = logging.getLogger(__name__)

DATABASE = "fleetstream"


CONNECT_TIMEOUT_S = 5.0


class StoreLockedError(StoreError, RuntimeError):
    """The embedded store is open in another process (normally a running sink)."""


class ClickHouseUnreachable(FleetstreamError):
    """No ClickHouse server answered at the DSN's address."""


def is_embedded(dsn: str) -> bool:
    """True for the embedded engine (`chdb://...`), whose data directory only one process may open."""
    return dsn.startswith("chdb:")


def embedded_path(dsn: str) -> Path:
    """The data directory of a `chdb://` DSN (`chdb:///abs/path` or `chdb://relative/path`)."""
    if not is_embedded(dsn):
        raise ValueError(f"not an embedded (chdb://) DSN: {dsn}")
    rest = dsn.removeprefix("chdb:").removeprefix("//")
    return Path(rest).expanduser().resolve()


def _is_lock_failure(exc: Exception) -> bool:
    """chDB refusing a store another process has open (it says so on stderr; the exception only says init failed)."""
    return any(marker in str(exc) for marker in ("Cannot lock file", "Error initializing EmbeddedServer"))


def _raise_if_owned(path: Path, cause: Exception) -> None:
    """A store the sink announces it owns stays locked while it runs: say so at once, naming its pid."""
    from sinks.query_server import store_owner  # it imports this module

    pid = store_owner(path)
    if pid is not None:
        raise StoreLockedError(f"the ClickHouse store {path} is held by the running sink (pid {pid})",
                               "stop the sink first; `fleetstream query` reads through it while it runs") from cause


def connect(dsn: str, lock_wait_s: float = 0.0) -> Client:
    """A clickhouse-connect client for `dsn`; the embedded store's directory is created if missing.

    `lock_wait_s`: how long to keep retrying while another process holds the embedded store (a short
    `fleetstream query` that opened it in-process), before StoreLockedError.

    HTTP clients get no session id: the sink and its query endpoint share one client from several threads,
    and ClickHouse refuses concurrent queries in one session.
    """
    if is_embedded(dsn):
        path = embedded_path(dsn)
        path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
                break
            except Exception as exc:
                if not _is_lock_failure(exc):
                    raise
                _raise_if_owned(path, exc)
                if time.monotonic() >= deadline:
                    raise StoreLockedError(f"the ClickHouse store {path} is open in another process",
                                           "chDB lets one process open a store: is a sink or another command "
                                           "using it?") from exc
                time.sleep(0.25)
        log.info("opened embedded ClickHouse store %s", path)
        return client
    parsed = urlparse(dsn)
    # the scheme picks the interface: clickhouse-connect itself ignores it and would send https://host over plain
    # HTTP to port 8123 (password included)
    interface = parsed.scheme if parsed.scheme in ("http", "https") else None
    try:
        client = clickhouse_connect.get_client(dsn=dsn, interface=interface, autogenerate_session_id=False,
                                               connect_timeout=CONNECT_TIMEOUT_S)
    except OperationalError as exc:
        # the address only: a DSN may carry a password
        where = f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        log.debug("connecting to ClickHouse at %s failed: %s", where, exc)
        raise ClickHouseUnreachable(f"cannot reach ClickHouse at {where}",
                                    "is the server running? set CLICKHOUSE_DSN") from exc
    log.info("connected to ClickHouse server %s:%s", parsed.hostname, parsed.port)
    return client
