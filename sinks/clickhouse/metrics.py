"""Prometheus metrics of the ClickHouse sink (served at `/metrics` by `endpoint.SinkEndpoint`).

Each sink has its own `CollectorRegistry` (two sinks in one test process do not share counters). Counters are
updated once per batch or per poll, never per message: a metrics call per record is what makes a hot loop slow.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["SinkMetrics"]

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
