"""The edge producer: Avro-encoded batches onto Kafka through one idempotent, compressing confluent-kafka producer.

Every source on a device publishes through this one class, so durability settings live in one place:
`enable.idempotence` (no duplicates from librdkafka's own retries), `acks=all`, compression, linger for
batching, and the murmur2 partitioner the stream worker uses too (`KafkaSettings.producer`).
The librdkafka client is created on first use, so constructing an EdgeProducer touches no network.
Every delivery report is counted (`fleetstream.kafka.DeliveryTracker`): `confirm()`, and leaving a `with` block
without an exception, raise `DeliveryError` unless the broker acknowledged every message published.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from fleetstream.config import KafkaSettings
from fleetstream.kafka import DeliveryError, DeliveryTracker
from fleetstream.producers.spool import SpoolEntry
from fleetstream.schemas.codec import Codec, serializer
from fleetstream.topics import record_type_of, sample_count

__all__ = ["DeliveryCallback", "EdgeProducer"]

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class EdgeProducer:
    """Publishes records to their topics; counts what the broker acknowledged, in messages and samples.

    `delivered_samples` is keyed by the record's `source` so a caller can report samples per source as
    the broker confirmed them, not as they were handed over. A command that publishes and then reports
    success calls `confirm()` first (or uses the producer as a context manager, which does).
    """

    def __init__(self, kafka: KafkaSettings, codec: Codec | None = None, **overrides: Any):
        defaults = {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": kafka.compression_type,
            "linger.ms": kafka.linger_ms,
            "batch.size": kafka.batch_size_bytes,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": 30_000,
        }
        # Precedence: our durable defaults < the configured client_config (SASL, tuning) < explicit overrides;
        # the partitioner is murmur2 whatever the client_config, so keys land where the worker's outputs do.
        self._config = {**defaults, **kafka.producer(**overrides)}
        self._codec = codec or serializer(kafka.schema_registry_url)
        self._producer: Producer | None = None
        self.deliveries = DeliveryTracker(kafka.bootstrap_servers)
        self.delivered_samples: Counter[str] = Counter()

    @property
    def delivered_messages(self) -> int:
        return self.deliveries.acknowledged

    @property
    def failed_messages(self) -> int:
        return self.deliveries.failed

    @property
    def last_error(self) -> KafkaError | None:
        return self.deliveries.last_error

    @property
    def config(self) -> dict[str, Any]:
        """The librdkafka configuration this producer uses (benchmarks compare raw clients on the same one)."""
        return dict(self._config)

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def publish(
        self, topic: str, key: str, record: dict[str, Any], on_delivery: DeliveryCallback | None = None
    ) -> None:
        """Encode and queue one record; counting happens when the broker acknowledges it."""
        record_type = record_type_of(topic)
        value = self._codec.encode(record_type, record, topic)
        samples = sample_count(record_type, record)
        self.publish_bytes(topic, key, value, record.get("source") or record.get("provider") or "", samples,
                           on_delivery)

    def publish_bytes(self, topic: str, key: str, value: bytes, source: str, samples: int,
                      on_delivery: DeliveryCallback | None = None) -> None:
        """Queue pre-encoded bytes (also how a deliberately malformed record is sent in the demo)."""

        round_ = self.deliveries.current_round

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if self.deliveries.report(err, round_, topic):
                self.delivered_samples[source] += samples
            if on_delivery is not None:
                on_delivery(err, msg)

        while True:
            try:
                self.producer.produce(topic, value=value, key=key.encode(), on_delivery=delivered)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                self.producer.poll(0.05)
        self.deliveries.produced()
        self.producer.poll(0)

    def publish_acknowledged(self, entries: Sequence[SpoolEntry]) -> list[bool]:
        """Produce a spool chunk and block until the broker has answered for every record.

        Returns, per entry, whether it was acknowledged; the spool moves its cursor over the acknowledged
        prefix only. Every record gets an answer within `message.timeout.ms`, so this never waits forever.
        The spool retries what failed, so its callers ask the spool, not `confirm()`, whether all arrived.
        """
        acked = [False] * len(entries)
        pending = [len(entries)]
        round_ = self.deliveries.current_round

        def answer(index: int, entry: SpoolEntry) -> DeliveryCallback:
            def callback(err: KafkaError | None, _: Message) -> None:
                acked[index] = self.deliveries.report(err, round_, entry.topic)
                pending[0] -= 1
                if acked[index]:
                    self.delivered_samples[entry.source] += entry.samples
            return callback

        for index, entry in enumerate(entries):
            while True:
                try:
                    self.producer.produce(entry.topic, entry.value, entry.key, on_delivery=answer(index, entry))
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.deliveries.produced()
        while pending[0] > 0:
            self.producer.flush(1.0)
        return acked

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight (failed ones are not: see confirm)."""
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout_s))

    @property
    def delivery_timeout_s(self) -> float:
        """How long the broker's answers may take: librdkafka fails a message after `message.timeout.ms`."""
        return float(self._config["message.timeout.ms"]) / 1000 + 5.0

    def confirm(self, timeout_s: float | None = None) -> None:
        """Wait (at most `timeout_s`, default `delivery_timeout_s`) until every message published since the last
        `confirm` has its delivery report; raise `fleetstream.kafka.DeliveryError` unless all were acknowledged."""
        timeout = self.delivery_timeout_s if timeout_s is None else timeout_s
        self.deliveries.confirm(self._producer if self._producer is not None else _NothingQueued(), timeout)

    def __enter__(self) -> EdgeProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.confirm()
            return
        if isinstance(exc, DeliveryError):
            return  # confirm() already waited and counted
        # Already failing: give queued messages their chance, but do not hide the original exception.
        remaining = self.flush(self.delivery_timeout_s)
        if remaining or self.failed_messages:
            log.error("%d messages failed and %d were unanswered at close", self.failed_messages, remaining)


class _NothingQueued:
    """Stands in for a client that was never created: nothing to flush."""

    def flush(self, timeout: float) -> int:
        return 0
