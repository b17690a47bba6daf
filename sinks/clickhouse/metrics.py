"""Prometheus metrics of the ClickHouse sink, and `/metrics` beside `/health` on its loopback endpoint.

Each sink has its own `CollectorRegistry` (two sinks in one test process do not share counters). Counters are
updated once per batch or per poll, never per message: a metrics call per record is what makes a hot loop slow.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from fleetstream.config import Settings
from sinks.clickhouse.client import Client
from sinks.query_server import QueryServer

__all__ = ["SinkEndpoint", "SinkMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SinkMetrics:
    """The sink's counters: rows and batches per table, messages, dead letters, replays skipped, insert latency."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rows = Counter("fleetstream_sink_rows", "Rows inserted into ClickHouse (a deduplicated replay counts "
                            "again)", ["table"], registry=r)
        self.batches = Counter("fleetstream_sink_batches", "Batches stored and committed", ["table"], registry=r)
        self.messages = Counter("fleetstream_sink_messages", "Kafka messages consumed", registry=r)
        self.dead_letters = Counter("fleetstream_sink_dead_letters", "Records the sink could not decode (sent to "
                                    "a dead-letter topic or stored as dead letters)", registry=r)
        self.replayed_skipped = Counter("fleetstream_sink_replayed_skipped", "Re-delivered messages skipped because "
                                        "their batch was already stored", registry=r)
        self.insert_seconds = Histogram("fleetstream_sink_insert_seconds", "Latency of one batch insert",
                                        ["table"], buckets=_LATENCY_BUCKETS, registry=r)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


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
