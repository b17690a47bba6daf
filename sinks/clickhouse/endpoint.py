"""The sink's loopback endpoint: the read-only query server plus the sink's health and `GET /metrics`.

Imported only when a sink starts serving: a sink run with `serve_queries=False` never loads the HTTP server.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from fleetstream.config import Settings
from fleetstream.health import PartHealth, handle_health_request
from fleetstream.store.client import Client
from fleetstream.store.query_server import QueryServer

__all__ = ["SinkEndpoint"]


class SinkEndpoint(QueryServer):
    """The sink's loopback endpoint: the read-only query server plus the sink's `/health*` and `/metrics`.

    The query server's own handler keeps `/query` (and `/health/live`, how `fleetstream query` finds it); this
    wraps it so `/health` here says what the sink's health endpoint says (not ready while Kafka or the store
    is gone), and one port answers Prometheus, health checks and `fleetstream query`.
    """

    def __init__(self, client: Client, settings: Settings, health: PartHealth, host: str = "127.0.0.1",
                 port: int | None = None):
        super().__init__(client, settings, host, port)
        self.health = health

    def start(self) -> None:
        super().start()
        assert self._httpd is not None
        self._httpd.RequestHandlerClass = _with_health(self._httpd.RequestHandlerClass, self.health)


def _with_health(base: Any, health: PartHealth) -> type[BaseHTTPRequestHandler]:
    class Handler(base):
        def do_GET(self) -> None:
            answer = handle_health_request(health, self.path)
            if answer is None:
                super().do_GET()
                return
            status, content_type, body = answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
