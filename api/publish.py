"""What `fleetstream serve` records goes to Kafka (DESIGN: it writes nothing to ClickHouse directly).

One idempotent producer (acks=all) for audit entries, alert acknowledgements, tracked events, metric values,
definitions and report announcements. `send_confirmed` waits
until the broker acknowledged the record, for commands whose caller must know it was stored (an
acknowledgement). `send` does not wait, for audit entries: a request is not held up by its own audit,
but a failed delivery is logged with the entry and counted (`audit_delivery_failures`), never dropped
silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from fleetstream.config import KafkaSettings
from fleetstream.schemas.codec import Codec, serializer

__all__ = ["PublishError", "Publisher"]

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not acknowledge a record."""


class Publisher:
    def __init__(self, kafka: KafkaSettings, codec: Codec | None = None,
                 on_failure: Callable[[str], None] | None = None):
        self._codec = codec or serializer(kafka.schema_registry_url)
        # kafka.producer: the murmur2 partitioner, so an acknowledgement keyed by vehicle lands on the partition of
        # that vehicle's validated records, which the stream worker's state for it reads (time to acknowledge)
        self._producer = Producer(kafka.producer(**{"enable.idempotence": True, "acks": "all", "linger.ms": 20,
                                                  "compression.type": kafka.compression_type}))
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="api-publisher", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.2)

    def send(self, topic: str, record_type: str, key: str, record: dict[str, Any]) -> None:
        """Queue a record; a delivery failure is logged with the record and reported to `on_failure`."""
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                log.error("%s record not delivered (%s): %s", topic, err, record)
                if self._on_failure is not None:
                    self._on_failure(topic)

        self._producer.produce(topic, key=key.encode(), value=self._codec.encode(record_type, record, topic),
                               on_delivery=delivered)

    def send_confirmed(self, topic: str, record_type: str, key: str, record: dict[str, Any],
                       timeout_s: float = 15.0) -> None:
        """Send and wait for the broker's acknowledgement; PublishError if it does not come."""
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            outcome.append(err)
            done.set()

        self._producer.produce(topic, key=key.encode(), value=self._codec.encode(record_type, record, topic),
                               on_delivery=delivered)
        self._producer.flush(0)
        if not done.wait(timeout_s) or outcome[0] is not None:
            raise PublishError(f"{topic}: not acknowledged by the broker: {outcome[0] if outcome else 'timeout'}")

    def send_all_confirmed(self, topic: str, record_type: str, items: list[tuple[str, dict[str, Any]]],
                           timeout_s: float = 30.0) -> None:
        """Send (key, record) pairs and wait until the broker acknowledged every one; PublishError naming how
        many were not (the caller answers with an error, so the client retries the batch: nothing is lost, and
        records that carry their own id collapse in ClickHouse)."""
        remaining = threading.Semaphore(0)
        failures: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)
            remaining.release()

        encoded = [(key, self._codec.encode(record_type, record, topic)) for key, record in items]
        for key, value in encoded:
            self._produce_waiting(topic, key, value, delivered, timeout_s)
        self._producer.flush(0)
        deadline = time.monotonic() + timeout_s
        acknowledged = 0
        while acknowledged < len(encoded) and remaining.acquire(timeout=max(0.0, deadline - time.monotonic())):
            acknowledged += 1
        if acknowledged < len(encoded) or failures:
            missing = len(encoded) - acknowledged + len(failures)
            cause = failures[0] if failures else "timeout"
            raise PublishError(f"{topic}: {missing} of {len(encoded)} records not acknowledged by the broker: {cause}")

    def _produce_waiting(self, topic: str, key: str, value: bytes, callback: Callable[..., None],
                         timeout_s: float) -> None:
        """Produce, waiting for room when the local queue is full (a large batch) rather than failing it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise PublishError(f"{topic}: the producer queue stayed full for {timeout_s:.0f} s") from None
                self._producer.poll(0.05)

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued; returns how many records are still undelivered (logged)."""
        self._stop.set()
        self._poller.join(timeout=2)
        remaining = int(self._producer.flush(timeout_s))
        if remaining:
            log.error("%d audit/ack records not delivered at shutdown", remaining)
        return remaining
