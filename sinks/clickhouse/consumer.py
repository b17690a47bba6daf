"""The ClickHouse sink: Kafka topics → batched, exactly-once inserts, offsets committed after the insert.

One confluent-kafka consumer (group `fleetstream-clickhouse`, manual commits) reads every stored topic
and all `dlq.*` topics. Messages are decoded on arrival and buffered per partition by a
`PartitionBatcher`; a batch is inserted when it reaches `batch_rows` rows or `batch_seconds` age, as one
column-oriented insert into its table with `insert_deduplication_token = <topic>-<partition>-<first>-<last>`.
The sequence per batch is: record range `before` → insert → produce the batch's dead letters → record
`after` → commit offsets synchronously. A crash anywhere in it leads to a replay that is either skipped
(`after`) or re-formed to the same range and deduplicated by ClickHouse (`before`); see `offsets.py`.

Rows of the samples table (nearly all of them) are inserted as an Arrow table (`rows.samples_arrow`), the
other tables as column lists; both through `inserts.insert_batch`, which the benchmark measures too.
Prometheus counters (`metrics.SinkMetrics`) are served at `/metrics` beside `/health` on the loopback
endpoint. `fault` (test-only, `faults.Fault`) kills the process at a chosen point of the sequence.

A message that does not decode is never dropped: it becomes a dead letter (stage `sink`) on the
dead-letter topic of its stream, or, when it was read from a dead-letter topic, a `dead_letters` row
straight away. A record whose batch id the stream already stored is skipped as a re-sent copy when its
bytes are the same (the digest kept in `ingested_batches`), and becomes a `batch_id_conflict` dead letter
when they differ: two sources or runs that reused an id must not lose the second one's data silently.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from fleetstream.config import Settings, group_instance_id
from fleetstream.health import LagTracker, PartHealth, PartMetrics
from fleetstream.kafka import DeliveryTracker
from fleetstream.schemas.codec import DecodeError, serializer
from fleetstream.schemas.deadletter import dead_letter_envelope
from fleetstream.schemas.sample_batch import SAMPLE_BATCH_TYPES
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.batches import Batch, Buffered, PartitionBatcher
from fleetstream.sinks.clickhouse.faults import Fault
from fleetstream.sinks.clickhouse.inserts import insert_batch, size_of
from fleetstream.sinks.clickhouse.metrics import SinkMetrics
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.sinks.clickhouse.offsets import OffsetStore, RangeState
from fleetstream.sinks.clickhouse.rows import Route, SourcedRecord
from fleetstream.store.client import Client, connect, is_embedded
from fleetstream.topics import dead_letter_topic

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DLQ_PATTERN", "GROUP_ID", "ClickHouseSink", "SinkStats", "dlq_topic_for"]

log = logging.getLogger(__name__)

GROUP_ID = "fleetstream-clickhouse"
DLQ_PATTERN = r"^dlq\..*"
"""Every dead-letter topic, including ones created after the sink started (librdkafka regex subscription)."""

_INSERT_ATTEMPTS = 5


def _stream(topic: str) -> str:
    """The stream a topic belongs to, for batch identities: `telemetry.signals.valid` → `telemetry.signals`."""
    return topic.removesuffix(".valid")


def dlq_topic_for(topic: str) -> str:
    """Where the sink sends a record of `topic` it cannot store: `dlq.<topic>`, the topic model's rule."""
    return dead_letter_topic(topic)


@dataclass(frozen=True)
class Rejected:
    """A consumed message the sink does not store: it goes to the stream's dead-letter topic with this reason."""

    item: Buffered
    error_code: str
    reason: str
    sample_count: int = 1


@dataclass(frozen=True)
class _Stored:
    """Where a batch id was first stored, and the digest of that record's bytes ('' before migration 015)."""

    digest: str
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def digest_of(raw: bytes) -> str:
    """The content digest kept with a batch id: equal bytes, equal digest (producers encode deterministically)."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


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
        self._producer: Producer | None = None
        self._deliveries = DeliveryTracker(settings.kafka.bootstrap_servers)
        self._offsets: OffsetStore | None = None
        self._batchers: dict[tuple[str, int], PartitionBatcher] = {}
        self._skipped_commits: dict[tuple[str, int], int] = {}
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
                self._consumer = None
            if self._producer is not None:
                self._producer.flush(10)
                self._producer = None
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
        self._commit_skipped()
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
            self._skipped_commits[(topic, partition)] = offset + 1
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
        assert self._offsets is not None and self._consumer is not None
        started = time.perf_counter()
        route = self._route(batch.topic)
        data, stored, dead = self._columns(batch, route)
        self._offsets.mark(batch.topic, batch.partition, batch.first_offset, batch.last_offset, RangeState.BEFORE)
        self._reached("crash_before_insert")
        if size_of(data):
            self._insert(route.table, data, batch.token)
            self._remember_batches(batch, stored)
        self._reached("crash_after_insert")
        if dead:
            self._send_dead_letters(batch.topic, batch.partition, dead)
        self._offsets.mark(batch.topic, batch.partition, batch.first_offset, batch.last_offset, RangeState.AFTER)
        self._reached("crash_after_mark")
        batcher.stored(batch)
        self.stats.batches += 1
        self.metrics.batches.labels(route.table).inc()
        self._commit(batch.topic, batch.partition, batch.last_offset + 1)
        self.health.metrics.count(messages=len(batch.items), samples=size_of(data),
                                  batch_seconds=time.perf_counter() - started)

    def _reached(self, point: str) -> None:
        if self._fault is not None:
            self._fault.reached(point)

    def _already_ingested(self, batch: Batch) -> dict[str, _Stored]:
        """Batch ids of this batch's records that an earlier batch of the same stream stored, with where and what."""
        ids = [i.record["batch_id"] for i in batch.items if i.record is not None and "batch_id" in i.record]
        if not ids:
            return {}
        found = self.client.query(
            "SELECT batch_id, digest, topic, partition, offset FROM fleetstream.ingested_batches "
            "WHERE stream = {stream:String} AND batch_id IN {ids:Array(String)} "
            "AND NOT (topic = {topic:String} AND partition = {partition:Int32} "
            "AND offset BETWEEN {first:Int64} AND {last:Int64}) ORDER BY ingested_at DESC",
            parameters={"stream": _stream(batch.topic), "ids": ids, "topic": batch.topic,
                        "partition": batch.partition, "first": batch.first_offset, "last": batch.last_offset})
        # oldest last, so it wins: the first copy stored is the one others are compared with
        return {row[0]: _Stored(row[1], row[2], int(row[3]), int(row[4])) for row in found.result_rows}

    def _remember_batches(self, batch: Batch, stored: list[Buffered]) -> None:
        """Record the batch ids (and digests) of the records this batch inserted, after the rows themselves."""
        items = [i for i in stored if i.record is not None and "batch_id" in i.record]
        if not items:
            return
        columns: dict[str, list[Any]] = {
            "stream": [_stream(batch.topic)] * len(items),
            "batch_id": [i.record["batch_id"] for i in items if i.record is not None],
            "topic": [batch.topic] * len(items), "partition": [batch.partition] * len(items),
            "offset": [i.offset for i in items], "digest": [digest_of(i.raw) for i in items]}
        insert_batch(self.client, "ingested_batches", columns, batch.token)

    def _columns(self, batch: Batch, route: Route) -> tuple[rows.Columns | pa.Table, list[Buffered], list[Rejected]]:
        """The batch's rows (Arrow for samples, column lists otherwise), the messages they come from, and the
        messages to dead-letter (undecodable, or a batch id already stored with other content).

        Records whose batch id and bytes are already stored (a re-sent copy) and repeats inside the batch are
        left out.
        """
        known = self._already_ingested(batch)
        good: list[Buffered] = []
        dead: list[Rejected] = []
        for i in batch.items:
            if i.record is None:
                dead.append(Rejected(i, "malformed", f"the ClickHouse sink could not decode it: {i.error}"))
                continue
            batch_id = i.record.get("batch_id")
            if batch_id is not None:
                first = known.get(batch_id)
                if first is not None and first.digest not in ("", digest_of(i.raw)):
                    dead.append(self._conflict(batch, i, batch_id, first))
                    continue
                if first is not None:
                    self.stats.redelivered_skipped += 1
                    continue
                known[batch_id] = _Stored(digest_of(i.raw), batch.topic, batch.partition, i.offset)
            good.append(i)
        sourced = [SourcedRecord(i.record, batch.topic, batch.partition, i.offset, i.key) for i in good
                   if i.record is not None]
        if route.table == "samples":
            return rows.samples_arrow(route.record_type, sourced), good, dead
        columns = rows.to_columns(route.record_type, sourced)
        if dead and route.table == rows.DEAD_LETTERS.table:
            # A dead-letter topic's own unreadable messages are stored here, not sent to a dlq of a dlq.
            raw = [(SourcedRecord({"original": d.item.raw}, batch.topic, batch.partition, d.item.offset,
                                  d.item.key), d.item.error or "") for d in dead]
            first_seen_ms = int(time.time() * 1000)
            columns = rows.merge_columns([columns, rows.dead_letter_columns_from_raw(raw, first_seen_ms)])
            self.stats.dead_letters += len(dead)
            self.metrics.dead_letters.inc(len(dead))
            self.health.metrics.count(dead_letters={"malformed": len(dead)})
            dead = []
        return columns, good, dead

    def _conflict(self, batch: Batch, item: Buffered, batch_id: str, first: _Stored) -> Rejected:
        self.stats.batch_id_conflicts += 1
        log.warning("batch id %s of %s[%d]@%d was stored from %s with other content: dead-lettered", batch_id,
                    batch.topic, batch.partition, item.offset, first)
        return Rejected(item, "batch_id_conflict",
                        f"batch id {batch_id!r} was already stored from {first} with other content; this record "
                        f"was not stored (a source or run reused the id)", item.rows)

    def _insert(self, table: str, columns: Any, token: str) -> None:
        """Insert `columns` (`rows.Columns` or an Arrow table), retrying with the same token; counts the rows."""
        n = size_of(columns)
        for attempt in range(1, _INSERT_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                insert_batch(self.client, table, columns, token)
            except Exception as exc:
                if attempt == _INSERT_ATTEMPTS:
                    raise
                delay = min(0.5 * 2 ** (attempt - 1), 8.0)
                log.warning("insert of %d rows into %s failed (attempt %d, retry in %.1f s): %s", n, table, attempt,
                            delay, exc)
                self.health.error(f"insert into {table}: {exc}")
                time.sleep(delay)  # same token on retry: an insert that did land is deduplicated
                continue
            elapsed = time.perf_counter() - started
            self.stats.insert_seconds += elapsed
            self.stats.rows[table] += n
            self.metrics.rows.labels(table).inc(n)
            self.metrics.insert_seconds.labels(table).observe(elapsed)
            log.debug("inserted %d rows into %s in %.3f s (%s)", n, table, elapsed, token)
            return

    def _send_dead_letters(self, topic: str, partition: int, dead: list[Rejected]) -> None:
        if self._producer is None:
            self._producer = Producer(self.settings.kafka.producer(**{
                "enable.idempotence": True, "acks": "all", "compression.type": self.settings.kafka.compression_type,
                "linger.ms": 5}))
        target, now_ms = self.dlq_topic(topic), int(time.time() * 1000)
        round_ = self._deliveries.current_round

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            self._deliveries.report(err, round_, target)

        for rejected in dead:
            item = rejected.item
            envelope = dead_letter_envelope(source_topic=topic, partition=partition, offset=item.offset,
                                            key=item.key, original=item.raw, stage="sink",
                                            error_code=rejected.error_code, reason=rejected.reason,
                                            sample_count=rejected.sample_count, now_ms=now_ms)
            self._producer.produce(target, self._codec.encode("dead_letter", envelope, target), key=item.key,
                                   on_delivery=delivered)
            self._deliveries.produced()
        # DeliveryError unless all were acknowledged; then no commit: the batch is replayed (its insert
        # deduplicated) and the dead letters sent again
        self._deliveries.confirm(self._producer, 30.0)
        self.stats.dead_letters += len(dead)
        self.metrics.dead_letters.inc(len(dead))
        self.health.metrics.count(dead_letters=Counter(d.error_code for d in dead))
        log.warning("%d records of %s[%d] sent to %s (%s)", len(dead), topic, partition, target,
                    ", ".join(sorted({d.error_code for d in dead})))

    def _commit(self, topic: str, partition: int, next_offset: int) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=[TopicPartition(topic, partition, next_offset)], asynchronous=False)
        except Exception as exc:  # the batch is recorded `after`, so a lost commit costs a skip, not a duplicate
            log.warning("commit of %s[%d]@%d failed: %s", topic, partition, next_offset, exc)
            self.health.error(f"commit of {topic}[{partition}]: {exc}")

    def _commit_skipped(self) -> None:
        while self._skipped_commits:
            (topic, partition), next_offset = self._skipped_commits.popitem()
            self._commit(topic, partition, next_offset)

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
