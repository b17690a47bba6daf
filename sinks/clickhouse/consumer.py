"""The ClickHouse sink's consumer loop: Kafka topics → batched, exactly-once inserts, offsets committed after.

One confluent-kafka consumer (group `fleetstream-clickhouse`, manual commits) reads every stored topic
and all `dlq.*` topics. Messages are decoded on arrival and buffered per partition (`batches`); a batch is
inserted when it reaches `batch_rows` rows or `batch_seconds` age, as one column-oriented insert into its
table with `insert_deduplication_token = <topic>-<partition>-<first>-<last>` (`inserts`). The sequence per
batch is: record range `before` → insert → produce the batch's dead letters → record `after` → commit
offsets synchronously. A crash anywhere in it leads to a replay that is either skipped (`after`) or
re-formed to the same range and deduplicated by ClickHouse (`before`); see `offsets`.

This module is the shell that wires the pieces, each in a module named after it and testable without a
broker: `batches` (cutting and the flush policy), `dedup` (batch ids already stored), `deadletters` (what is
not stored, and where it goes), `offsets` (the recorded ranges), `commits` (offsets to Kafka), `inserts`.
Prometheus counters (`fleetstream.prometheus.SinkMetrics`) are served at `/metrics` beside `/health` on the
loopback endpoint. `fault` (test-only, `faults.Fault`) kills the process at a chosen point of the sequence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from fleetstream.config import Settings, group_instance_id
from fleetstream.health import LagTracker, PartHealth
from fleetstream.prometheus import PartMetrics, SinkMetrics
from fleetstream.schemas.codec import DecodeError, serializer
from fleetstream.schemas.sample_batch import SAMPLE_BATCH_TYPES
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.batches import Batch, Buffered, PartitionBatcher
from fleetstream.sinks.clickhouse.commits import Commits
from fleetstream.sinks.clickhouse.deadletters import (
    DeadLetterSender,
    Rejected,
    dlq_topic_for,
    stored_dead_letter_columns,
)
from fleetstream.sinks.clickhouse.dedup import IngestedBatches, sort_out
from fleetstream.sinks.clickhouse.faults import Fault
from fleetstream.sinks.clickhouse.inserts import insert_retrying, size_of
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.sinks.clickhouse.offsets import OffsetStore, RangeState
from fleetstream.sinks.clickhouse.rows import Route, SourcedRecord
from fleetstream.store.client import Client, connect, is_embedded

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DLQ_PATTERN", "GROUP_ID", "ClickHouseSink", "SinkStats", "dlq_topic_for"]

log = logging.getLogger(__name__)

GROUP_ID = "fleetstream-clickhouse"
DLQ_PATTERN = r"^dlq\..*"
"""Every dead-letter topic, including ones created after the sink started (librdkafka regex subscription)."""


@dataclass
class SinkStats:
    """Counters of one sink's lifetime."""

    rows: Counter[str] = field(default_factory=Counter)
    """Rows inserted per table (a replayed batch deduplicated by ClickHouse counts again here)."""
    messages: int = 0
    batches: int = 0
    dead_letters: int = 0
    """Records the sink dead-lettered itself: undecodable (sent to a dlq topic or stored directly) or conflicting."""
    redelivered_skipped: int = 0
    """Records skipped because the same record (batch id and bytes) was already stored (at-least-once upstream)."""
    batch_id_conflicts: int = 0
    """Records dead-lettered because their batch id was already stored with other content."""
    replayed_skipped: int = 0
    """Re-delivered messages skipped because their batch was already acknowledged."""
    insert_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"rows": dict(self.rows), "messages": self.messages, "batches": self.batches,
                "dead_letters": self.dead_letters, "replayed_skipped": self.replayed_skipped,
                "redelivered_skipped": self.redelivered_skipped, "batch_id_conflicts": self.batch_id_conflicts,
                "insert_seconds": round(self.insert_seconds, 3)}


class ClickHouseSink:
    """Consumes the stored topics into ClickHouse; `run(stop_event)` for a service, `run_until_idle` for demos.

    Nothing connects in `__init__`: the store, consumer and producer are opened by `start()` (called by both
    run methods). With an embedded store the sink also serves the read-only query endpoint, since no other
    process can open the store while it runs.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        routes: Mapping[str, Route] | None = None,
        subscribe_dlq: bool = True,
        group_id: str = GROUP_ID,
        dlq_topic: Callable[[str], str] = dlq_topic_for,
        client: Client | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        serve_queries: bool = True,
        metrics: SinkMetrics | None = None,
        fault: Fault | None = None,
    ):
        self.settings = settings
        self.routes = dict(rows.ROUTES if routes is None else routes)
        self.subscribe_dlq = subscribe_dlq
        self.group_id = group_id
        self.dlq_topic = dlq_topic
        self.stats = SinkStats()
        self.metrics = metrics or SinkMetrics()
        self._fault = fault
        self._counted = (0, 0)
        """(messages, replayed_skipped) already added to the metrics."""
        self._client = client
        self._owns_client = client is None
        self._consumer_overrides = dict(consumer_overrides or {})
        self._serve_queries = serve_queries
        self._codec = serializer(settings.kafka.schema_registry_url)
        self._consumer: Consumer | None = None
        self._commits: Commits | None = None
        self._dead_letters = DeadLetterSender(settings.kafka, self._codec, dlq_topic)
        self._offsets: OffsetStore | None = None
        self._ingested: IngestedBatches | None = None
        self._batchers: dict[tuple[str, int], PartitionBatcher] = {}
        self._query_server: Any = None
        self._last_activity = time.monotonic()
        self._lag = LagTracker()
        self.health = PartHealth("clickhouse_sink", settings.kafka, settings.health, settings.health.clickhouse_sink,
                                 home=settings.home, store=self._ping_store, group=group_id, lag=self._lag,
                                 metrics=PartMetrics("clickhouse_sink", self.metrics.registry))

    # lifecycle

    @property
    def client(self) -> Client:
        if self._client is None:
            # wait out a `fleetstream query` that opened the embedded store in-process a moment ago
            self._client = connect(self.settings.clickhouse_dsn, lock_wait_s=30.0)
        return self._client

    def start(self) -> None:
        """Open the store (applying pending migrations), subscribe, and serve queries when embedded."""
        if self._consumer is not None:
            return
        migrate(self.client, self.settings.clickhouse.retention_days)
        self._offsets = OffsetStore(self.client, self.group_id)
        self._ingested = IngestedBatches(self.client)
        topics = [*self.routes, *([DLQ_PATTERN] if self.subscribe_dlq else [])]
        instance_id = group_instance_id(self.settings.home, self.settings.clickhouse.instance_id,
                                        f"{self.group_id} {' '.join(sorted(topics))}")
        config = self.settings.kafka.client(**{
            "group.id": self.group_id,
            **({"group.instance.id": instance_id} if instance_id else {}),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 10_000,
            **self._consumer_overrides,
        })
        self._consumer = Consumer(config)
        self._commits = Commits(self._consumer, self.health.error)
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("ClickHouse sink subscribed to %d topics%s as group %s, member %s", len(self.routes),
                 " and dlq.*" if self.subscribe_dlq else "", self.group_id,
                 config.get("group.instance.id") or "(dynamic)")
        self.health.start()
        if self._serve_queries and is_embedded(self.settings.clickhouse_dsn):
            from fleetstream.sinks.clickhouse.endpoint import SinkEndpoint

            self._query_server = SinkEndpoint(self.client, self.settings, self.health)
            self._query_server.start()


    def _ping_store(self) -> str:
        """The health check of the store: ClickHouse answers a query."""
        return str(self.client.query("SELECT version()").result_rows[0][0])

    def close(self, flush: bool = True) -> None:
        """Insert what is buffered (unless `flush` is False: simulates a crash), then leave the group."""
        try:
            if flush and self._consumer is not None:
                self.flush(force=True)
        finally:
            self.health.stop()
            if self._query_server is not None:
                self._query_server.stop()
                self._query_server = None
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = self._commits = None
            self._dead_letters.close()
            if self._owns_client and self._client is not None:
                self._client.close()  # releases the embedded store for `fleetstream query` and the next sink
                self._client = None
            log.info("ClickHouse sink stopped: %s", self.stats.as_dict())

    def run(self, stop_event: threading.Event) -> SinkStats:
        """Consume until `stop_event` is set, then flush and close."""
        self.start()
        try:
            while not stop_event.is_set():
                self.poll_once()
        finally:
            self.close()
        return self.stats

    def run_until_idle(self, idle_s: float = 5.0, max_s: float | None = None) -> SinkStats:
        """Consume until no message arrived for `idle_s` (or `max_s` passed), flush, close; for demos and tests."""
        self.start()
        started = self._last_activity = time.monotonic()
        try:
            while time.monotonic() - self._last_activity < idle_s:
                if max_s is not None and time.monotonic() - started > max_s:
                    log.warning("ClickHouse sink stopped after %.0f s without becoming idle", max_s)
                    break
                self.poll_once()
        finally:
            self.close()
        return self.stats

    # the loop

    def poll_once(self, timeout_s: float = 0.2, max_messages: int = 10_000) -> int:
        """Consume one bulk of messages into the partition buffers and insert the batches that are due."""
        assert self._consumer is not None, "start() first"
        messages = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        now = time.monotonic()
        for message in messages:
            self._accept(message, now)
        if messages:
            self._last_activity = now
        self.flush()
        assert self._commits is not None
        self._commits.commit_skipped()
        self._count_messages()
        self._lag.refresh(self._consumer, list(self._batchers))
        return len(messages)

    def _count_messages(self) -> None:
        """Add this poll's message and skip counts to the metrics (once per poll, not per message)."""
        messages, skipped = self._counted
        self.metrics.messages.inc(self.stats.messages - messages)
        self.metrics.replayed_skipped.inc(self.stats.replayed_skipped - skipped)
        self._counted = (self.stats.messages, self.stats.replayed_skipped)

    def _accept(self, message: Message, now: float) -> None:
        error = message.error()
        if error is not None:
            if error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                log.debug("consumer: %s", error)
                return
            if error.code() == KafkaError.FENCED_INSTANCE_ID or "fenced" in str(error).lower():
                raise RuntimeError(f"another sink joined group {self.group_id} with this sink's group.instance.id; "
                                   f"give each sink its own clickhouse.instance_id ({error})")
            if error.fatal():
                raise RuntimeError(f"fatal Kafka consumer error: {error}")
            log.warning("consumer error: %s", error)
            self.health.error(f"consumer: {error.str()}")
            return
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        self.stats.messages += 1
        batcher = self._batcher(topic, partition)
        if not batcher.admits(offset):
            self.stats.replayed_skipped += 1
            assert self._commits is not None
            self._commits.skipped(topic, partition, offset)
            return
        if batcher.must_cut_before(offset):
            self._store(batcher.take(), batcher)
        batcher.add(self._buffered(topic, message, offset), now)
        # cut inside a bulk too: batches end at the message that reaches the limit (or the re-formed range)
        ch = self.settings.clickhouse
        if batcher.due(now, ch.batch_rows, ch.batch_seconds):
            self._store(batcher.take(), batcher)

    def _buffered(self, topic: str, message: Message, offset: int) -> Buffered:
        raw = message.value() or b""
        route = self._route(topic)
        try:
            record = (self._codec.decode_batch(raw, route.record_type) if route.record_type in SAMPLE_BATCH_TYPES
                      else self._codec.decode(raw, route.record_type))
            return Buffered(offset, message.key(), raw, record, None, rows.rows_of(route.record_type, record))
        except (DecodeError, KeyError, TypeError) as exc:
            return Buffered(offset, message.key(), raw, None, str(exc), 1)

    def _route(self, topic: str) -> Route:
        return self.routes[topic] if topic in self.routes else rows.route(topic)

    def _batcher(self, topic: str, partition: int) -> PartitionBatcher:
        batcher = self._batchers.get((topic, partition))
        if batcher is None:  # assignment callbacks normally create it; this covers a message racing them
            assert self._offsets is not None
            prior = self._offsets.load([(topic, partition)]).get((topic, partition))
            batcher = self._batchers[(topic, partition)] = PartitionBatcher(topic, partition, prior)
        return batcher

    def flush(self, force: bool = False) -> int:
        """Insert every batch that is due (all open batches with `force`); returns batches inserted."""
        now, inserted = time.monotonic(), 0
        ch = self.settings.clickhouse
        for batcher in list(self._batchers.values()):
            if batcher.items and (force or batcher.due(now, ch.batch_rows, ch.batch_seconds)):
                self._store(batcher.take(), batcher)
                inserted += 1
        return inserted

    # one batch

    def _store(self, batch: Batch, batcher: PartitionBatcher) -> None:
        """before → insert → dead letters → after → commit (see the module docstring)."""
        assert self._offsets is not None and self._commits is not None
        started = time.perf_counter()
        route = self._route(batch.topic)
        data, stored, dead = self._columns(batch, route)
        self._offsets.mark(batch.topic, batch.partition, batch.first_offset, batch.last_offset, RangeState.BEFORE)
        self._reached("crash_before_insert")
        if size_of(data):
            self._insert(route.table, data, batch.token)
            assert self._ingested is not None
            self._ingested.remember(batch, stored)
        self._reached("crash_after_insert")
        if dead:
            self._send_dead_letters(batch.topic, batch.partition, dead)
        self._offsets.mark(batch.topic, batch.partition, batch.first_offset, batch.last_offset, RangeState.AFTER)
        self._reached("crash_after_mark")
        batcher.stored(batch)
        self.stats.batches += 1
        self.metrics.batches.labels(route.table).inc()
        self._commits.commit(batch.topic, batch.partition, batch.last_offset + 1)
        self.health.metrics.count(messages=len(batch.items), samples=size_of(data),
                                  batch_seconds=time.perf_counter() - started)

    def _reached(self, point: str) -> None:
        if self._fault is not None:
            self._fault.reached(point)

    def _columns(self, batch: Batch, route: Route) -> tuple[rows.Columns | pa.Table, list[Buffered], list[Rejected]]:
        """The batch's rows (Arrow for samples, column lists otherwise), the messages they come from, and the
        messages to dead-letter (`dedup.sort_out`: undecodable, or a batch id already stored with other content).
        """
        assert self._ingested is not None
        sorted_out = sort_out(batch, self._ingested.known(batch))
        self.stats.redelivered_skipped += sorted_out.redelivered
        self.stats.batch_id_conflicts += sorted_out.conflicts
        good, dead = sorted_out.good, sorted_out.dead
        sourced = [SourcedRecord(i.record, batch.topic, batch.partition, i.offset, i.key) for i in good
                   if i.record is not None]
        if route.table == "samples":
            return rows.samples_arrow(route.record_type, sourced), good, dead
        columns = rows.to_columns(route.record_type, sourced)
        if dead and route.table == rows.DEAD_LETTERS.table:
            # A dead-letter topic's own unreadable messages are stored here, not sent to a dlq of a dlq.
            stored = stored_dead_letter_columns(batch, dead, first_seen_ms=int(time.time() * 1000))
            columns = rows.merge_columns([columns, stored])
            self._count_dead_letters(Counter({"malformed": len(dead)}))
            dead = []
        return columns, good, dead

    def _insert(self, table: str, columns: rows.Columns | pa.Table, token: str) -> None:
        """Insert `columns` (retried with the same token, see `inserts.insert_retrying`); counts the rows."""
        n = size_of(columns)
        elapsed = insert_retrying(self.client, table, columns, token, on_retry=self.health.error)
        self.stats.insert_seconds += elapsed
        self.stats.rows[table] += n
        self.metrics.rows.labels(table).inc(n)
        self.metrics.insert_seconds.labels(table).observe(elapsed)
        log.debug("inserted %d rows into %s in %.3f s (%s)", n, table, elapsed, token)

    def _send_dead_letters(self, topic: str, partition: int, dead: list[Rejected]) -> None:
        """Raises unless all were acknowledged; then no commit: the batch replays and they are sent again."""
        self._dead_letters.send(topic, partition, dead)
        self._count_dead_letters(Counter(d.error_code for d in dead))

    def _count_dead_letters(self, by_reason: Counter[str]) -> None:
        n = by_reason.total()
        self.stats.dead_letters += n
        self.metrics.dead_letters.inc(n)
        self.health.metrics.count(dead_letters=by_reason)

    # rebalances

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._offsets is not None
        wanted = [(tp.topic, tp.partition) for tp in partitions]
        priors = self._offsets.load(wanted)
        for topic, partition in wanted:
            self._batchers[(topic, partition)] = PartitionBatcher(topic, partition, priors.get((topic, partition)))
        pinned = [f"{t}[{p}]" for (t, p), prior in priors.items() if prior.state is RangeState.BEFORE]
        self.health.assigned(len(wanted))
        log.info("assigned %d partitions%s", len(wanted),
                 f"; re-forming unacknowledged batches of {', '.join(pinned)}" if pinned else "")
        self._last_activity = time.monotonic()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Insert and commit what the revoked partitions buffered, so the next owner starts after it."""
        self.health.revoked()
        for tp in partitions:
            batcher = self._batchers.pop((tp.topic, tp.partition), None)
            if batcher is None or not batcher.items:
                continue
            try:
                self._store(batcher.take(), batcher)
            except Exception as exc:  # the next owner re-forms the batch from the recorded range
                log.error("could not store %s[%d] on revoke, abandoning its buffer: %s", tp.topic, tp.partition, exc)
        log.info("revoked %d partitions", len(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost partitions may already belong to someone else: drop their buffers, commit nothing."""
        self.health.lost()
        for tp in partitions:
            self._batchers.pop((tp.topic, tp.partition), None)
        log.warning("lost %d partitions; their buffered messages will be re-read by the new owner", len(partitions))
