"""A local stand-in for the analytics GraphQL backend that checks every request against the contract.

The demo and the contract tests forward into this server instead of the real backend. It type-checks
each request the way a GraphQL server does (parse, `validate` against the contract schema, variable
coercion while executing) and answers like the real backend: ids are strings of integers, the same
configuration or message descriptor gets the same id again, and data that names an unknown
configuration or message id is refused. A request that does not type-check gets a GraphQL `errors`
response (400 for a document that does not parse or validate, 200 with `errors` for variables that do
not coerce or ids that do not exist), so a client that drifts from the contract fails loudly.

Everything accepted is recorded (`requests`, `calls(field)`), counted (`counts`), and the server can be
told to fail (`fail_next`) to exercise retries. Stdlib `ThreadingHTTPServer` on loopback, port 0 by
default (the OS picks one), so tests run it in-process without fixtures beyond `start_backend()`.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)
from graphql.language import DocumentNode, FieldNode

from fleetstream.sinks.contracts import graphql_backend_sdl

__all__ = ["ContractBackend", "RecordedRequest", "start_backend"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedRequest:
    """One accepted request: the root field it called, the document's operation name and its variables."""

    field: str
    operation_name: str | None
    variables: dict[str, Any]
    query: str
    authorization: str | None


class _Resolvers:
    """Root value for execution: one method per Mutation field, like the backend's resolvers.

    graphql-core's default resolver calls a callable attribute of the root value with `(info, **args)`.
    Ids are handed out per distinct key and returned as strings of integers, as the real backend does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_id = itertools.count(1)
        self.configurations: dict[tuple[int, int, int, int], str] = {}
        self.messages: dict[tuple[str, str, str, str], str] = {}

    def health(self, _info: Any) -> str:
        return "ok"

    def createConfiguration(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        key = (input["deviceId"], input["vehicleId"], input["fleetId"], input["organizationId"])
        with self._lock:
            config_id = self.configurations.setdefault(key, str(next(self._next_id)))
        return {"id": config_id, **input}

    def createMessage(self, _info: Any, input: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for message in input["messages"]:
            key = tuple((message.get(k) or "").strip() for k in ("name", "networkName", "ecuName", "arbId"))
            with self._lock:
                message_id = self.messages.setdefault(key, str(next(self._next_id)))  # type: ignore[arg-type]
            fields = ("arbId", "name", "networkName", "ecuId", "ecuName", "fileId")
            out.append({"id": message_id, **{k: message.get(k) for k in fields}})
        return out

    def upsertSignalData(self, _info: Any, input: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for signal in input["signals"]:
            self._check_ids(signal["configurationId"], signal["messageId"])
            out.append({"configurationId": signal["configurationId"], "messageId": signal["messageId"],
                        "messageName": self._message_name(signal["messageId"]), "name": signal["name"],
                        "paramType": signal.get("paramType"), "unit": signal["unit"]})
        return out

    def upsertDtcData(self, _info: Any, input: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        out = []
        for item in input:
            if item is None:
                continue
            self._check_ids(item["configurationId"], item["messageId"])
            out.append({"configurationId": item["configurationId"], "messageId": item["messageId"]})
        return out

    def upsertGpsData(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        self._check_ids(input["configurationId"])
        device, vehicle, fleet, org = self._configuration(input["configurationId"])
        return {"id": input["configurationId"], "deviceId": device, "vehicleId": vehicle, "fleetId": fleet,
                "organizationId": org}

    def createNetworkStats(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        if input.get("configurationId") is not None:
            self._check_ids(input["configurationId"])
        return dict(input)

    def _check_ids(self, configuration_id: str, message_id: str | None = None) -> None:
        # ID inputs arrive as strings whether the client sent "7" or 7 (GraphQL's ID coercion).
        with self._lock:
            if configuration_id not in self.configurations.values():
                raise GraphQLError(f"Configuration {configuration_id} does not exist")
            if message_id is not None and message_id not in self.messages.values():
                raise GraphQLError(f"Message {message_id} does not exist")

    def _configuration(self, configuration_id: str) -> tuple[int, int, int, int]:
        with self._lock:
            return next(k for k, v in self.configurations.items() if v == configuration_id)

    def _message_name(self, message_id: str) -> str:
        with self._lock:
            return next(k[0] for k, v in self.messages.items() if v == message_id)


class ContractBackend:
    """The contract-checking server; `start()` serves on a background thread, `stop()` shuts it down.

    `token`, when set, is required as `Authorization: Bearer <token>` (401 otherwise). `schema_sdl`
    replaces the contract, e.g. to play an older deployment in tests.
    """

    def __init__(self, token: str | None = None, schema_sdl: str | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.schema: GraphQLSchema = build_schema(schema_sdl or graphql_backend_sdl())
        self.token = token
        self.resolvers = _Resolvers()
        self.requests: list[RecordedRequest] = []
        self.rejections: list[tuple[int, list[str]]] = []
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._failures_left = 0
        self._failure_status = 503
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/graphql"

    def start(self) -> ContractBackend:
        """Serve on a daemon thread; returns self so `ContractBackend().start()` reads naturally."""
        # A short poll interval makes stop() quick: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="contract-backend", daemon=True)
        self._thread.start()
        return self

    def serve(self, stop_event: threading.Event) -> None:
        """Serve until `stop_event` is set (the foreground form, for a `fleetstream fake-backend` command)."""
        self.start()
        stop_event.wait()
        self.stop()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serving loop: without one it would wait forever
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> ContractBackend:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` requests with HTTP `status` (before auth and validation), then recover."""
        with self._lock:
            self._failures_left, self._failure_status = count, status

    def calls(self, field: str) -> list[dict[str, Any]]:
        """Variables of every accepted request to the root field `field`, in arrival order."""
        with self._lock:
            return [r.variables for r in self.requests if r.field == field]

    def handle(self, body: bytes, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """One POST body in, (HTTP status, JSON response) out; the whole server behaviour without sockets."""
        injected = self._take_failure()
        if injected is not None:
            self.counts["injected_failures"] += 1
            return injected, {"errors": [{"message": f"injected failure (HTTP {injected})"}]}
        if self.token is not None and not _token_matches(authorization, self.token):
            self.counts["unauthorized"] += 1
            return 401, {"errors": [{"message": "missing or invalid bearer token"}]}
        try:
            payload = json.loads(body)
            query, variables = _request_parts(payload)
            document = parse(query)
        except (ValueError, GraphQLError) as exc:
            return self._reject(400, [str(exc)])
        return self._run(document, query, variables, authorization)

    def _run(self, document: DocumentNode, query: str, variables: dict[str, Any],
             authorization: str | None) -> tuple[int, dict[str, Any]]:
        errors = validate(self.schema, document)
        if errors:
            return self._reject(400, [e.message for e in errors])
        result = execute_sync(self.schema, document, root_value=self.resolvers, variable_values=variables)
        if result.errors:
            return self._reject(200, [e.message for e in result.errors], data=result.data)
        operation = get_operation_ast(document)
        record = RecordedRequest(_root_field(operation), _operation_name(operation), variables, query, authorization)
        with self._lock:
            self.requests.append(record)
            self.counts[record.field] += 1
        log.debug("accepted %s", record.field)
        return 200, {"data": result.data}

    def _reject(self, status: int, messages: list[str], data: Any = None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.rejections.append((status, messages))
            self.counts["rejected"] += 1
        body: dict[str, Any] = {"errors": [{"message": m} for m in messages]}
        if status == 200:
            body["data"] = data
        return status, body

    def _take_failure(self) -> int | None:
        with self._lock:
            if self._failures_left <= 0:
                return None
            self._failures_left -= 1
            return self._failure_status


def _token_matches(authorization: str | None, token: str) -> bool:
    expected = f"Bearer {token}".encode()
    return authorization is not None and hmac.compare_digest(authorization.encode(), expected)


def _request_parts(payload: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise ValueError("the request body must be a JSON object with a 'query' string")
    variables = payload.get("variables") or {}
    if not isinstance(variables, dict):
        raise ValueError("'variables' must be a JSON object")
    return payload["query"], variables


def _root_field(operation: OperationDefinitionNode | None) -> str:
    if operation is None:
        return ""
    first = operation.selection_set.selections[0]
    return first.name.value if isinstance(first, FieldNode) else ""


def _operation_name(operation: OperationDefinitionNode | None) -> str | None:
    return operation.name.value if operation is not None and operation.name is not None else None


def _handler_for(backend: ContractBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """POST = one GraphQL request; GET answers a liveness probe."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, body = backend.handle(self.rfile.read(length), self.headers.get("Authorization"))
            self._reply(status, body)

        def do_GET(self) -> None:
            self._reply(200, {"status": "ok"})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            # http.server writes every request to stderr; route it to DEBUG logging instead.
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def start_backend(token: str | None = None, schema_sdl: str | None = None) -> tuple[str, ContractBackend]:
    """Start a contract backend on 127.0.0.1 with an OS-chosen port; returns (endpoint URL, backend)."""
    backend = ContractBackend(token=token, schema_sdl=schema_sdl).start()
    return backend.url, backend
