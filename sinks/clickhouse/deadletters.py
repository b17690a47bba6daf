"""The records the ClickHouse sink does not store, and where they go instead.

A message that does not decode, or whose batch id was already stored with other content, is never dropped:
it becomes a dead letter (stage `sink`) on the dead-letter topic of its stream. When it was read from a
dead-letter topic itself, it becomes a `dead_letters` row straight away (no dlq of a dlq). Sending counts as
done only when the broker acknowledged every dead letter; otherwise the batch is not committed and replays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from fleetstream.config import KafkaSettings
from fleetstream.kafka import DeliveryTracker
from fleetstream.schemas.codec import Codec
from fleetstream.schemas.deadletter import dead_letter_envelope
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.batches import Batch, Buffered
from fleetstream.topics import dead_letter_topic

__all__ = ["DeadLetterSender", "Rejected", "dlq_topic_for", "stored_dead_letter_columns", "undecodable"]

log = logging.getLogger(__name__)

_CONFIRM_TIMEOUT_S = 30.0


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


def undecodable(item: Buffered) -> Rejected:
    """The dead letter of a message the sink could not decode."""
    return Rejected(item, "malformed", f"the ClickHouse sink could not decode it: {item.error}")


def stored_dead_letter_columns(batch: Batch, dead: list[Rejected], first_seen_ms: int) -> rows.Columns:
    """`dead_letters` rows for unreadable messages of a dead-letter topic: stored as they are, with the error."""
    raw = [(rows.SourcedRecord({"original": d.item.raw}, batch.topic, batch.partition, d.item.offset, d.item.key),
            d.item.error or "") for d in dead]
    return rows.dead_letter_columns_from_raw(raw, first_seen_ms)


class DeadLetterSender:
    """Produces dead letters and waits until the broker acknowledged all of them.

    The idempotent producer is created on the first dead letter: most sinks never send one.
    """

    def __init__(self, kafka: KafkaSettings, codec: Codec, dlq_topic: Callable[[str], str] = dlq_topic_for):
        self._kafka = kafka
        self._codec = codec
        self._dlq_topic = dlq_topic
        self._producer: Producer | None = None
        self._deliveries = DeliveryTracker(kafka.bootstrap_servers)

    def send(self, topic: str, partition: int, dead: list[Rejected]) -> str:
        """Send the dead letters of `topic`/`partition`; returns the dead-letter topic.

        Raises `DeliveryError` unless all were acknowledged; the caller then does not commit: the batch is
        replayed (its insert deduplicated) and the dead letters sent again.
        """
        producer = self._open()
        target, now_ms = self._dlq_topic(topic), int(time.time() * 1000)
        round_ = self._deliveries.current_round

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            self._deliveries.report(err, round_, target)

        for rejected in dead:
            item = rejected.item
            envelope = dead_letter_envelope(source_topic=topic, partition=partition, offset=item.offset,
                                            key=item.key, original=item.raw, stage="sink",
                                            error_code=rejected.error_code, reason=rejected.reason,
                                            sample_count=rejected.sample_count, now_ms=now_ms)
            producer.produce(target, self._codec.encode("dead_letter", envelope, target), key=item.key,
                             on_delivery=delivered)
            self._deliveries.produced()
        self._deliveries.confirm(producer, _CONFIRM_TIMEOUT_S)
        log.warning("%d records of %s[%d] sent to %s (%s)", len(dead), topic, partition, target,
                    ", ".join(sorted({d.error_code for d in dead})))
        return target

    def _open(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._kafka.producer(**{
                "enable.idempotence": True, "acks": "all", "compression.type": self._kafka.compression_type,
                "linger.ms": 5}))
        return self._producer

    def close(self) -> None:
        """Deliver what is still queued (bounded), then drop the producer."""
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
