"""The Kafka shell of the GraphQL sink: consume the validated topics, forward per partition, commit after.

Records are buffered per partition and forwarded when a buffer is full (records or samples) or old
enough (`batch_interval_seconds`). A partition's batch is one sequence of requests with nothing else in
flight for it; its offsets are committed only once the backend accepted the batch and the batch's dead
letters are durably on `dlq.<source topic>`. Every record thus ends as exactly one of: accepted by the
backend, or one dead letter (stage `forward`). Partitions are handled one after another in one loop,
which keeps each partition's order. A revoked partition's buffer is dropped: its offsets were not
committed, so its next owner reads those records again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from fleetstream.config import GraphQLSinkSettings, Settings, group_instance_id
from fleetstream.health import LagTracker, PartHealth
from fleetstream.kafka import DeliveryTracker
from fleetstream.schemas.codec import DecodeError, serializer
from fleetstream.schemas.deadletter import dead_letter
from fleetstream.sinks.graphql.client import GraphQLClient, RetryPolicy
from fleetstream.sinks.graphql.exceptions import OffsetsNotCommitted
from fleetstream.sinks.graphql.forwarder import Failure, Forwarder
from fleetstream.topics import record_type_of, sample_count

__all__ = ["ForwarderStats", "GraphQLForwarder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwarderStats:
    """Counters of a forwarder: HTTP requests (retries included), requests that failed for good, dead
    letters produced, records the backend accepted, and partition batches committed."""

    requests: int
    failures: int
    dead_letters: int
    records_forwarded: int
    batches_committed: int


@dataclass
class _Entry:
    offset: int
    key: bytes | None
    value: bytes
    record_type: str
    record: dict[str, Any] | None
    samples: int
    decode_error: str = ""


@dataclass
class _PartitionBuffer:
    opened_at: float
    entries: list[_Entry] = field(default_factory=list)
    samples: int = 0

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        self.samples += entry.samples

    def due(self, now: float, options: GraphQLSinkSettings) -> bool:
        return (len(self.entries) >= options.batch_size or self.samples >= options.max_samples_per_request
                or now - self.opened_at >= options.batch_interval_seconds)


class GraphQLForwarder:
    """Consumes `telemetry.{signals,dtcs,gps,netstats}.valid` (group `fleetstream-graphql`) into the backend.

    `consumer`, `producer` and `client` default to real ones built from `settings` on first use (no
    network in `__init__`); tests pass fakes. `clock` is monotonic seconds, `now_ms` wall-clock epoch ms
    for the dead letters' first-seen time.
    """

    def __init__(self, settings: Settings, options: GraphQLSinkSettings | None = None, *,
                 consumer: Any = None, producer: Any = None, client: GraphQLClient | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.settings = settings
        self.options = options or settings.graphql
        self.client = client or _client_from(settings, self.options)
        self.forwarder = Forwarder(self.client, self.options)
        self._consumer = consumer
        self._producer = producer
        self._subscribed = False
        self._clock = clock
        self._now_ms = now_ms
        self._buffers: dict[tuple[str, int], _PartitionBuffer] = {}
        self._deliveries = DeliveryTracker(settings.kafka.bootstrap_servers)
        self.dead_letters = 0
        self.batches_committed = 0
        self._assigned: set[tuple[str, int]] = set()
        self._lag = LagTracker()
        self.health = PartHealth("graphql_sink", settings.kafka, settings.health, settings.health.graphql_sink,
                                 home=settings.home, store=self._probe_backend, group=self.options.group_id,
                                 lag=self._lag)

    @property
    def stats(self) -> ForwarderStats:
        return ForwarderStats(self.client.requests, self.client.failures, self.dead_letters,
                              self.forwarder.records_forwarded, self.batches_committed)

    def run(self, stop_event: threading.Event) -> ForwarderStats:
        """Forward until `stop_event` is set, then forward what is buffered and close; serves its health meanwhile."""
        self.health.start()
        try:
            while not stop_event.is_set():
                self.step()
            self.flush()
        finally:
            self.health.stop()
            self.close()
        return self.stats

    def _probe_backend(self) -> str:
        """The health check of the forwarder's store, the backend: one request answered (no retries)."""
        self.client.probe(timeout_s=self.settings.health.probe_timeout_s)
        return ""

    def run_for(self, seconds: float) -> ForwarderStats:
        """Forward for `seconds` of wall time (the demo's bounded run)."""
        deadline = self._clock() + seconds
        try:
            while self._clock() < deadline:
                self.step()
            self.flush()
        finally:
            self.close()
        return self.stats

    def drain(self, idle_seconds: float = 2.0, max_seconds: float = 300.0) -> ForwarderStats:
        """Forward until no message arrived for `idle_seconds` (or `max_seconds` passed); then close."""
        started = last_message = self._clock()
        try:
            while self._clock() - last_message < idle_seconds and self._clock() - started < max_seconds:
                if self.step():
                    last_message = self._clock()
            self.flush()
        finally:
            self.close()
        return self.stats

    def step(self) -> int:
        """One poll: buffer what arrived, forward every partition batch that is due; the messages polled."""
        consumer = self._consumer_subscribed()
        messages = consumer.consume(self.options.poll_max_messages, self.options.poll_timeout_seconds)
        for message in messages:
            self._accept(message)
        now = self._clock()
        for partition in [p for p, b in self._buffers.items() if b.due(now, self.options)]:
            self._forward_partition(partition)
        if self.health.address is not None:  # only while serving: fakes in unit tests have no positions
            self._lag.refresh(consumer, self._assigned)
        return len(messages)

    def flush(self) -> None:
        """Forward and commit every buffered partition batch now."""
        for partition in list(self._buffers):
            self._forward_partition(partition)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(30)
        self.client.close()

    def _consumer_subscribed(self) -> Any:
        if self._consumer is None:
            # static membership: a restarted forwarder takes its partitions back without waiting for a rebalance
            instance_id = group_instance_id(self.settings.home, self.options.instance_id,
                                            f"{self.options.group_id} {' '.join(sorted(self.options.topics))}")
            self._consumer = Consumer(self.settings.kafka.client(**{
                "group.id": self.options.group_id, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", **({"group.instance.id": instance_id} if instance_id else {})}))
        if not self._subscribed:
            self._consumer.subscribe(list(self.options.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
            self._subscribed = True
        return self._consumer

    def _dlq_producer(self) -> Any:
        if self._producer is None:
            kafka = self.settings.kafka
            self._producer = Producer(kafka.producer(**{"enable.idempotence": True, "acks": "all",
                                                        "compression.type": kafka.compression_type,
                                                        "linger.ms": kafka.linger_ms}))
        return self._producer

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        self.health.assigned(len(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)
        self.health.lost()

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned.clear()
        self.health.revoked()
        for tp in partitions:
            dropped = self._buffers.pop((tp.topic, tp.partition), None)
            if dropped is not None:
                log.info("partition %s[%d] revoked; %d uncommitted records left for its next owner",
                         tp.topic, tp.partition, len(dropped.entries))

    def _accept(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():  # e.g. fenced: another forwarder joined with this one's group.instance.id
                raise RuntimeError(f"fatal Kafka consumer error (graphql.instance_id must differ per forwarder): "
                                   f"{error}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
                self.health.error(f"consumer: {error.str()}")
            return
        topic, value = message.topic(), message.value() or b""
        record_type = record_type_of(topic)
        try:
            codec = serializer(self.settings.kafka.schema_registry_url)
            record: dict[str, Any] | None = codec.decode(value, record_type)
            entry = _Entry(message.offset(), message.key(), value, record_type, record,
                           sample_count(record_type, record))  # type: ignore[arg-type]
        except DecodeError as exc:
            entry = _Entry(message.offset(), message.key(), value, record_type, None, 1, str(exc))
        buffer = self._buffers.setdefault((topic, message.partition()), _PartitionBuffer(self._clock()))
        buffer.add(entry)

    def _forward_partition(self, partition: tuple[str, int]) -> None:
        buffer = self._buffers.pop(partition, None)
        if buffer is None or not buffer.entries:
            return
        started = time.perf_counter()
        decoded = [e for e in buffer.entries if e.record is not None]
        failures = self.forwarder.forward([(e.record_type, e.record) for e in decoded])  # type: ignore[misc]
        dead = [(e, Failure("malformed", e.decode_error)) for e in buffer.entries if e.record is None]
        dead += [(decoded[i], failure) for i, failure in sorted(failures.items())]
        self._dead_letter(partition, dead)
        self._commit(partition, buffer.entries[-1].offset + 1)
        self.health.metrics.count(messages=len(buffer.entries), samples=sum(e.samples for e in buffer.entries),
                                  dead_letters=Counter(failure.code for _, failure in dead),
                                  batch_seconds=time.perf_counter() - started)
        if failures:
            self.health.error(f"{len(failures)} records of {partition[0]}[{partition[1]}] dead-lettered: "
                              f"{next(iter(failures.values())).reason}")
        log.debug("%s[%d]: %d records, %d dead letters", *partition, len(buffer.entries), len(dead))

    def _dead_letter(self, partition: tuple[str, int], dead: list[tuple[_Entry, Failure]]) -> None:
        if not dead:
            return
        producer = self._dlq_producer()
        topic, number = partition
        now_ms = self._now_ms()
        round_ = self._deliveries.current_round

        def delivered(err: KafkaError | None, message: Message) -> None:
            self._deliveries.report(err, round_, message.topic() or "")

        for entry, failure in dead:
            dlq, key, value = dead_letter(source_topic=topic, partition=number, offset=entry.offset, key=entry.key,
                                          original=entry.value, stage="forward", error_code=failure.code,
                                          reason=failure.reason, sample_count=entry.samples, now_ms=now_ms,
                                          attempt=failure.attempts,
                                          codec=serializer(self.settings.kafka.schema_registry_url))
            producer.produce(dlq, value=value, key=key, on_delivery=delivered)
            self._deliveries.produced()
        # The dead letters must be acknowledged before the offsets that they account for are committed:
        # confirm raises DeliveryError otherwise, and the offsets stay where they are.
        self._deliveries.confirm(producer, 30.0)
        self.dead_letters += len(dead)

    def _commit(self, partition: tuple[str, int], next_offset: int) -> None:
        consumer = self._consumer_subscribed()
        try:
            consumer.commit(offsets=[TopicPartition(partition[0], partition[1], next_offset)], asynchronous=False)
        except KafkaException as exc:
            raise OffsetsNotCommitted(f"could not commit {partition[0]}[{partition[1]}] up to offset {next_offset} "
                                      f"on Kafka at {self.settings.kafka.bootstrap_servers}: {_reason(exc)}",
                                      "the records since the last commit are forwarded again next run") from exc
        self.batches_committed += 1


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _client_from(settings: Settings, options: GraphQLSinkSettings) -> GraphQLClient:
    if not settings.graphql_endpoint:
        raise ValueError("no GraphQL endpoint configured (GRAPHQL_ENDPOINT or FLEETSTREAM_GRAPHQL_ENDPOINT)")
    retry = RetryPolicy(options.retry_attempts, options.retry_base_delay_seconds, options.retry_max_delay_seconds)
    return GraphQLClient(settings.graphql_endpoint, settings.sec_auth_token, verify=options.tls_verify(),
                         timeout_s=options.timeout_seconds, retry=retry)
