"""Prometheus metrics (operations counters served at `/metrics`), not the KPI/custom metrics of the data.

`PartMetrics` is what every long-running part exposes (served by `fleetstream.health.PartHealth`); a part's
own counters share its registry (`SinkMetrics` for the ClickHouse sink, `AgentMetrics` for the edge agent);
`ApiMetrics` are the read API's. Each part has its own
`CollectorRegistry`, so two parts in one test process do not share counters. Counters are updated once per
batch or per poll, never per record: a metrics call per record is what makes a hot loop slow. The KPI and
custom metric definitions that become records of the data live in `fleetstream.streams.custom_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LATENCY_BUCKETS", "AgentMetrics", "ApiMetrics", "MetricSet", "PartMetrics", "SinkMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: one batch (5 ms) to a stalled insert (30 s)."""


class MetricSet:
    """Metrics in one registry of their own, and its Prometheus text."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric in the registry (another set's sharing it included)."""
        return generate_latest(self.registry)


class PartMetrics(MetricSet):
    """The metrics every part exposes, in one registry the part may add its own metrics to.

    Updated once per batch or per probe, never per record: a metrics call per record is what makes a hot loop slow.
    """

    def __init__(self, part: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.part = part
        r = self.registry
        self.messages = Counter("fleetstream_messages", "Messages (records) handled", ["part"], registry=r)
        self.samples = Counter("fleetstream_samples", "Samples or rows handled", ["part"], registry=r)
        self.dead_letters = Counter("fleetstream_dead_letters", "Records dead-lettered, by reason",
                                    ["part", "reason"], registry=r)
        self.batch_seconds = Histogram("fleetstream_batch_seconds", "Time to handle one batch end to end",
                                       ["part"], buckets=LATENCY_BUCKETS, registry=r)
        self.rebalances = Counter("fleetstream_rebalances", "Partition assignments received", ["part"], registry=r)
        self.consumer_lag = Gauge("fleetstream_consumer_lag", "Records behind the end of each partition, from "
                                  "the group's committed offsets", ["part", "group", "topic", "partition"],
                                  registry=r)
        self.ready = Gauge("fleetstream_ready", "1 when every readiness check passes", ["part"], registry=r)
        self.check_ok = Gauge("fleetstream_check_ok", "1 when this readiness check passes", ["part", "check"],
                              registry=r)
        self.errors = Counter("fleetstream_errors", "Errors the part recorded (see /health for the last one)",
                              ["part"], registry=r)

    def count(self, messages: int = 0, samples: int = 0, dead_letters: Mapping[str, int] | None = None,
              batch_seconds: float | None = None) -> None:
        """Count one batch: its messages, samples, dead letters by reason, and how long it took."""
        if messages:
            self.messages.labels(self.part).inc(messages)
        if samples:
            self.samples.labels(self.part).inc(samples)
        for reason, n in (dead_letters or {}).items():
            if n:
                self.dead_letters.labels(self.part, reason).inc(n)
        if batch_seconds is not None:
            self.batch_seconds.labels(self.part).observe(batch_seconds)


class SinkMetrics(MetricSet):
    """The ClickHouse sink's own counters: rows and batches per table, messages, dead letters, replays skipped,
    insert latency."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
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
                                        ["table"], buckets=LATENCY_BUCKETS, registry=r)


class AgentMetrics(MetricSet):
    """The edge agent's own metrics: samples spooled and published per source, spool backlog, breakers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        labels = ["source"]
        self.received = Counter("fleetstream_agent_received_samples", "Samples spooled", labels, registry=self.registry)
        self.published = Counter("fleetstream_agent_published_records", "Records acknowledged by Kafka",
                                 registry=self.registry)
        self.failed = Counter("fleetstream_agent_failed_publishes", "Records Kafka did not acknowledge (retried)",
                              registry=self.registry)
        self.dropped = Gauge("fleetstream_agent_dropped_samples", "Samples dropped by the disk budget",
                             ["reason"], registry=self.registry)
        self.spooled_bytes = Gauge("fleetstream_agent_spool_pending_bytes", "Bytes waiting in the spool",
                                   registry=self.registry)
        self.latency = Gauge("fleetstream_agent_spool_latency_seconds", "Spool-to-ack latency of the last chunk",
                             registry=self.registry)
        self.circuit = Gauge("fleetstream_agent_circuit_open", "1 when the source's breaker is open",
                             labels, registry=self.registry)


class ApiMetrics(MetricSet):
    """The read API's metrics (own registry, so tests can run several apps in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.requests = Counter("fleetstream_api_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("fleetstream_api_request_seconds", "Request latency", ["route"],
                                 registry=self.registry)
        self.denied = Counter("fleetstream_api_denied", "Requests refused: unauthenticated, forbidden, out of scope",
                              ["reason"], registry=self.registry)
        self.publish_failures = Counter("fleetstream_api_publish_failures", "Audit or ack records not delivered",
                                        ["topic"], registry=self.registry)
        self.cache = Counter("fleetstream_api_cache", "Cache lookups", ["result"], registry=self.registry)
