"""Read-only SQL over HTTP on loopback, served by the process that owns the embedded store.

chDB opens a data directory from one process only. While the sink runs it owns the store, so it serves
`POST /query` (`{"sql": ..., "parameters": {...}}` → `{"columns", "types", "rows"}`) and `GET /health` on
127.0.0.1 and announces itself in `<store>/query_server.json` (port and pid; removed on exit).
`query(settings, sql, parameters)` is what `fleetstream query` calls: through the endpoint when the
discovery file names a live process, else by opening the store itself (or the server DSN).

Read-only is enforced by ClickHouse: every statement runs with the setting `readonly=1`, which refuses
writes, DDL, `SET` and table functions whatever the SQL says. The statement check in front of it is a
guard, not the enforcement: it gives a clear error early, rejects `INTO OUTFILE` (a SELECT that writes a
file, which `readonly` allows), and keeps write statements away from clickhouse-connect's embedded
backend, which applies per-query settings to INSERTs with `SET` and cannot undo `readonly` afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.store.client import DATABASE, Client, connect, embedded_path, is_embedded
from fleetstream.store.discovery import DISCOVERY_FILE, discover, store_owner

__all__ = [
    "DISCOVERY_FILE",
    "QueryError",
    "QueryResult",
    "QueryServer",
    "check_read_only",
    "discover",
    "execute_read_only",
    "query",
    "store_owner",
    "use_store_database",
]

log = logging.getLogger(__name__)

_READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_QUOTES = "'\"`"
_MAX_BODY_BYTES = 1 << 20


class QueryError(FleetstreamError, ValueError):
    """The statement was refused or failed; the message is meant for the person who wrote it."""

    exit_code = 2  # the statement is the user's input


@dataclass(frozen=True)
class QueryResult:
    """A result set with JSON-ready values (times as ISO strings), the same whichever way it was run."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows}


def _without_comments(sql: str) -> tuple[str, str]:
    """`sql` with its comments blanked, and the same with the inside of quoted strings and names masked too.

    A scan, not a regular expression: `--` and `/*` inside a literal (`SELECT 'a--b'`) are text, and a quote
    inside a comment opens nothing. The masked copy (same length) is what the statement checks look at, so a
    `;` or `INTO OUTFILE` inside a string is not mistaken for SQL.
    """
    kept, masked = [], []
    i = 0
    while i < len(sql):
        if sql[i] in _QUOTES:
            end = _quoted_end(sql, i)
            kept.append(sql[i:end])
            masked.append("".join(c if c == sql[i] else "_" for c in sql[i:end]))
        elif sql.startswith(("--", "/*"), i):
            end = _comment_end(sql, i)
            kept.append(" " * (end - i))
            masked.append(" " * (end - i))
        else:
            end = i + 1
            kept.append(sql[i])
            masked.append(sql[i])
        i = end
    return "".join(kept), "".join(masked)


def _quoted_end(sql: str, start: int) -> int:
    """Just past the quote closing the string or name opened at `start` (backslash escapes; `''` reopens)."""
    quote, i = sql[start], start + 1
    while i < len(sql) and sql[i] != quote:
        i += 2 if sql[i] == "\\" else 1
    return min(i + 1, len(sql))


def _comment_end(sql: str, start: int) -> int:
    """The end of the `--` (to the line's end) or `/* */` comment starting at `start`."""
    if sql.startswith("/*", start):
        close = sql.find("*/", start + 2)
        return len(sql) if close < 0 else close + 2
    newline = sql.find("\n", start)
    return len(sql) if newline < 0 else newline


def check_read_only(sql: str) -> str:
    """The statement without comments, or QueryError when it is not a single read statement."""
    kept, masked = _without_comments(sql)
    start = len(masked) - len(masked.lstrip())
    end = len(masked.rstrip().rstrip(";").rstrip())
    statement, code = kept[start:end], masked[start:end]
    if not statement:
        raise QueryError("empty statement")
    first = code.split(None, 1)[0].upper()
    if first not in _READ_STATEMENTS:
        raise QueryError(f"only {', '.join(_READ_STATEMENTS)} statements are allowed, not {first}")
    if ";" in code:
        raise QueryError("one statement per query")
    if re.search(r"\bINTO\s+OUTFILE\b", code, re.I):
        raise QueryError("INTO OUTFILE is not allowed")
    return statement


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def execute_read_only(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
    """Run one read statement with `readonly=1`; errors become QueryError with ClickHouse's message."""
    statement = check_read_only(sql)
    try:
        result = client.query(statement, parameters=parameters or {}, settings={"readonly": 1})
    except Exception as exc:
        raise QueryError(_first_line(exc)) from exc
    columns, types = list(result.column_names), [t.name for t in result.column_types]
    if not columns and not result.result_rows:
        columns, types = _described(client, statement, parameters or {})
    return QueryResult(columns, types, [[_jsonable(v) for v in row] for row in result.result_rows])


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


def _described(client: Client, statement: str, parameters: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Column names and types of a query that returned nothing: the embedded engine sends no header for an
    empty result, and an empty table with its header is still an answer (`DESCRIBE (query)` has it)."""
    if statement.split(None, 1)[0].upper() not in ("SELECT", "WITH"):
        return [], []
    try:
        described = client.query(f"DESCRIBE ({statement})", parameters=parameters, settings={"readonly": 1})
    except Exception as exc:
        log.debug("no header for an empty result: %s", _first_line(exc))
        return [], []
    return [str(row[0]) for row in described.result_rows], [str(row[1]) for row in described.result_rows]


def use_store_database(client: Client) -> None:
    """Resolve unqualified names in the fleetstream database (`SELECT count() FROM samples`), once migrations
    created it; before that they resolve where ClickHouse's default puts them."""
    found = client.query("SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": DATABASE})
    if found.result_rows and found.result_rows[0][0]:
        client.database = DATABASE


class QueryServer:
    """The loopback endpoint over a client the owning process already has (one chDB client per process)."""

    def __init__(self, client: Client, settings: Settings, host: str = "127.0.0.1", port: int | None = None):
        self._client = client
        self._host = host
        self._port = settings.clickhouse.query_port if port is None else port
        dsn = settings.clickhouse_dsn
        store = embedded_path(dsn) if is_embedded(dsn) else settings.home / "clickhouse"
        self.discovery_path = store / DISCOVERY_FILE
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Bind (the configured port, else any free one: the discovery file says which), serve, announce."""
        use_store_database(self._client)
        handler = _handler(self._client)
        try:
            self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        except OSError as exc:
            log.warning("query port %d unavailable (%s); using a free port", self._port, exc)
            self._httpd = ThreadingHTTPServer((self._host, 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="query-server", daemon=True)
        self._thread.start()
        self._announce()
        log.info("read-only query endpoint on http://%s:%d (%s)", self._host, self.port, self.discovery_path)

    def _announce(self) -> None:
        self.discovery_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.discovery_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": self._host, "port": self.port, "pid": os.getpid(),
                                   "started_at": dt.datetime.now(dt.UTC).isoformat()}))
        tmp.replace(self.discovery_path)

    def stop(self) -> None:
        """Stop serving and remove the discovery file (only if it still names this process)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(self.discovery_path.read_text()).get("pid") == os.getpid():
                self.discovery_path.unlink()
        log.info("query endpoint stopped")

    def __enter__(self) -> QueryServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _handler(client: Client) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/health", "/health/live"):
                self._reply(200, {"status": "ok", "pid": os.getpid()})
            else:
                self._reply(404, {"error": "GET /health/live or POST /query"})

        def do_POST(self) -> None:
            if self.path != "/query":
                self._reply(404, {"error": "POST /query"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY_BYTES:
                self._reply(413, {"error": "request too large"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                result = execute_read_only(client, str(body.get("sql", "")), body.get("parameters") or {})
            except (QueryError, json.JSONDecodeError, AttributeError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200, result.as_dict())

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def _remote(base: str, sql: str, parameters: dict[str, Any], timeout_s: float) -> QueryResult:
    request = urllib.request.Request(f"{base}/query", data=json.dumps({"sql": sql, "parameters": parameters}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise QueryError(json.loads(exc.read() or b"{}").get("error", str(exc))) from exc
    return QueryResult(payload["columns"], payload["types"], payload["rows"])


def query(settings: Settings, sql: str, parameters: dict[str, Any] | None = None,
          timeout_s: float = 120.0) -> QueryResult:
    """Run a read statement wherever the store is: the running sink's endpoint, the embedded store, a server."""
    params = {k: _jsonable(v) for k, v in (parameters or {}).items()}
    dsn = settings.clickhouse_dsn
    if is_embedded(dsn):
        base = discover(embedded_path(dsn))
        if base is not None:
            return _remote(base, sql, params, timeout_s)
    check_read_only(sql)  # before opening a store this process would otherwise lock for nothing
    started = time.perf_counter()
    client = connect(dsn)
    try:
        use_store_database(client)
        return execute_read_only(client, sql, params)
    finally:
        client.close()
        log.debug("query ran in-process in %.3f s", time.perf_counter() - started)
