"""One way to reach ClickHouse: the embedded engine (`chdb://<dir>`) or a server (`http(s)://host:8123`).

Both give a clickhouse-connect `Client` with the same API, so nothing above this module knows which one
it talks to. The embedded engine locks its data directory to one process (see DESIGN.md); callers that
may run beside the sink go through `fleetstream.store.query_server.query` instead of opening the store themselves.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from fleetstream.errors import FleetstreamError, StoreError
from fleetstream.store.discovery import store_owner

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
    """The embedded store is open in another process (normally a running sink); the message names it."""


def store_holder(path: Path) -> int | None:
    """The pid of another process that has the embedded store at `path` open, if any.

    The engine holds an exclusive flock on `<store>/status` while it has the store open; /proc/locks names the
    process holding it (the pid written inside the file is not refreshed by chDB, so it can be stale).
    """
    try:
        st = (path / "status").stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
            pid = int(fields[4])
            return pid if pid != os.getpid() else None
    return None


def _is_sink(path: Path, pid: int) -> bool:
    """Whether `pid` is the sink serving the store (it announces itself in the query endpoint's discovery file)."""
    return store_owner(path) == pid


def _held_message(path: Path, pid: int) -> str:
    if _is_sink(path, pid):
        return f"the ClickHouse store {path} is held by the running sink (pid {pid})"
    return f"the ClickHouse store {path} is held by another process (pid {pid})"


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


def connect(dsn: str, lock_wait_s: float = 0.0) -> Client:
    """A clickhouse-connect client for `dsn`; the embedded store's directory is created if missing.

    `lock_wait_s`: how long to keep retrying while another process holds the embedded store (a short
    `fleetstream query` that opened it in-process), before StoreLockedError; a running sink is not waited for.

    HTTP clients get no session id: the sink and its query endpoint share one client from several threads,
    and ClickHouse refuses concurrent queries in one session.
    """
    if is_embedded(dsn):
        path = embedded_path(dsn)
        path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_wait_s
        while True:
            holder = store_holder(path)
            if holder is None:
                try:
                    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
                    break
                except Exception as exc:
                    # chDB reports a held store as "Cannot lock file" or, in some versions, only as BAD_ARGUMENTS
                    # "Error initializing EmbeddedServer": ask the lock who holds it before calling it that
                    holder = store_holder(path)
                    if holder is None and "Cannot lock file" not in str(exc):
                        raise
            if holder is not None and (time.monotonic() >= deadline or _is_sink(path, holder)):
                raise StoreLockedError(_held_message(path, holder),
                                       "stop the sink first; `fleetstream query` reads through it while it runs")
            if holder is None and time.monotonic() >= deadline:
                raise StoreLockedError(f"the ClickHouse store {path} is open in another process")
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
