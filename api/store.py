"""Where `fleetstream serve` reads ClickHouse: through the store owner, the embedded store, or a server.

- ClickHouse server (`http(s)://` DSN): one clickhouse-connect client, created as the sinks create theirs.
- Embedded store (`chdb://`), sink running: the sink owns the data directory (chDB allows one process), so
  reads go to its read-only loopback endpoint (`fleetstream.store.query_server`). The endpoint's address is looked up
  from the discovery file and kept until a request to it fails.
- Embedded store, no sink: this process opens the store and keeps it while queries come, closing it after
  `idle_close_s` (20 s) without one, so a sink that starts meanwhile gets it: the sink waits up to 30 s for
  the lock, longer than the idle time. Opening costs 1-2 s (chDB loads the tables), a query on an open
  store tens of milliseconds, so the store must stay open between the requests of a working session, not
  only within one (a 2 s idle time put a re-open into many dashboards). In-process queries are serialised:
  one process holds one chDB session.

Every statement runs with ClickHouse's `readonly=1` whichever way it goes. Only `fleetstream.api.scoped.ScopedReader`
calls this; endpoints never do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from fleetstream.config import Settings
from fleetstream.store.client import Client, connect, embedded_path, is_embedded
from fleetstream.store.query_server import QueryError, QueryResult, check_read_only, discover, execute_read_only

__all__ = ["QueryError", "QueryResult", "StoreReader"]

log = logging.getLogger(__name__)


class StoreReader:
    """Runs read statements on the configured ClickHouse, whichever process owns it."""

    def __init__(self, settings: Settings, timeout_s: float = 60.0, idle_close_s: float = 20.0):
        self._dsn = settings.clickhouse_dsn
        self._timeout_s = timeout_s
        self._idle_close_s = idle_close_s
        self._client: Client | None = None
        self._embedded: Client | None = None
        self._last_used = 0.0
        self._endpoint: str | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def mode(self) -> str:
        """server, sink-endpoint or embedded (for /health/ready)."""
        if not is_embedded(self._dsn):
            return "server"
        return "sink-endpoint" if self._owner() is not None else "embedded"

    def query(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        if not is_embedded(self._dsn):
            return execute_read_only(self._server(), sql, parameters)
        base = self._owner()
        if base is not None:
            try:
                return self._remote(base, sql, parameters)
            except OSError:
                self._endpoint = None  # the sink went away: look again (it may have restarted elsewhere)
                base = self._owner()
                if base is not None:
                    return self._remote(base, sql, parameters)
        return self._in_process(sql, parameters)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        with self._lock:
            self._close_embedded()

    def _server(self) -> Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = connect(self._dsn)
        return self._client

    def _owner(self) -> str | None:
        if self._endpoint is None:
            self._endpoint = discover(embedded_path(self._dsn))
        return self._endpoint

    def _remote(self, base: str, sql: str, parameters: dict[str, Any]) -> QueryResult:
        body = json.dumps({"sql": sql, "parameters": parameters}).encode()
        request = urllib.request.Request(f"{base}/query", data=body, headers={"Content-Type": "application/json"},
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a 400 is the statement's fault, not the connection's
            raise QueryError(json.loads(exc.read() or b"{}").get("error", str(exc))) from exc
        return QueryResult(payload["columns"], payload["types"], payload["rows"])

    def _in_process(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        check_read_only(sql)
        with self._lock:
            if self._embedded is None:
                started = time.perf_counter()
                self._embedded = connect(self._dsn, lock_wait_s=5.0)
                log.info("opened the embedded store in this process (%.1f s); closed after %.0f s idle",
                         time.perf_counter() - started, self._idle_close_s)
            try:
                return execute_read_only(self._embedded, sql, parameters)
            finally:
                self._last_used = time.monotonic()
                if self._watcher is None:  # one watcher per opening, not a timer thread per query
                    self._watcher = threading.Thread(target=self._close_when_idle, name="store-idle-close",
                                                     daemon=True)
                    self._watcher.start()

    def _close_when_idle(self) -> None:
        """Closes the embedded store once no query came for `idle_close_s`; ends with the opening it watches."""
        while True:
            with self._lock:
                idle_s = time.monotonic() - self._last_used
                if self._embedded is None or idle_s >= self._idle_close_s:
                    self._close_embedded()
                    self._watcher = None
                    return
            time.sleep(self._idle_close_s - idle_s)

    def _close_embedded(self) -> None:
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None
            self._endpoint = None  # a sink may take the store now: look for its endpoint again
            log.info("closed the embedded store (idle)")
