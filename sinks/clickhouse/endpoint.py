"""The sink's loopback endpoint: the read-only query server plus `GET /metrics` (Prometheus text format).

Imported only when a sink starts serving: a sink run with `serve_queries=False` never loads the HTTP server.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from fleetstream.config import Settings
from fleetstream.sinks.clickhouse.metrics import SinkMetrics
from fleetstream.store.client import Client
from fleetstream.store.query_server import QueryServer

__all__ = ["SinkEndpoint"]


class SinkEndpoint(QueryServer):
    """The sink's loopback endpoint: the read-only query server plus `GET /metrics`.

    The query server's own handler keeps `/health` and `/query`; this wraps it to add `/metrics`, so one port
    answers Prometheus, health checks and `fleetstream query`.
    """

    def __init__(self, client: Client, settings: Settings, metrics: SinkMetrics, host: str = "127.0.0.1",
                 port: int | None = None):
        super().__init__(client, settings, host, port)
        self.metrics = metrics

    def start(self) -> None:
        super().start()
        assert self._httpd is not None
        self._httpd.RequestHandlerClass = _with_metrics(self._httpd.RequestHandlerClass, self.metrics)


def _with_metrics(base: Any, metrics: SinkMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(base):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                super().do_GET()
                return
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
