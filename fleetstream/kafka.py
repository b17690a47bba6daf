"""What every command that talks to Kafka shares: reaching the cluster, and knowing what the broker acknowledged.

- `require_kafka`: a metadata request with a short timeout before a command starts work, so an unreachable
  broker or a missing topic is one clear error within seconds, not 30 s of retries and librdkafka noise.
- `DeliveryTracker`: counts a producer's delivery reports, errors included; `confirm` flushes with a bounded
  timeout and raises `DeliveryError` unless the broker acknowledged every message produced. A command that
  hands data on succeeds only after that.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from fleetstream.config import KafkaSettings
from fleetstream.errors import FleetstreamError
from fleetstream.logs import LibrdkafkaLog

__all__ = [
    "PROBE_TIMEOUT_S",
    "DeliveryError",
    "DeliveryTracker",
    "KafkaUnreachable",
    "MissingTopics",
    "require_kafka",
]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
UNREACHABLE_HINT = "is the broker running? set KAFKA_BOOTSTRAP_SERVERS"

# The probe's own librdkafka lines (connection refused, all brokers down) say what its error says: DEBUG only.
_PROBE_LOG = LibrdkafkaLog(max_level=logging.DEBUG)


class KafkaUnreachable(FleetstreamError):
    """No broker answered a metadata request within the probe's timeout."""


class MissingTopics(FleetstreamError):
    """Topics a command writes or reads do not exist (our brokers do not create topics on first use)."""


class DeliveryError(FleetstreamError):
    """Some messages were not acknowledged by the broker: they failed, or were still unanswered at the deadline."""

    def __init__(self, unacknowledged: int, total: int, servers: str, hint: str) -> None:
        super().__init__(f"{unacknowledged} of {total} messages were not acknowledged by Kafka at {servers}", hint)
        self.unacknowledged = unacknowledged
        self.total = total


def require_kafka(kafka: KafkaSettings, topics: Iterable[str] = (), timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise `KafkaUnreachable` unless a broker answers within `timeout_s`, `MissingTopics` unless `topics` exist.

    A refused connection to every bootstrap server (librdkafka's "all brokers down") fails at once rather
    than after `timeout_s`: nothing listens there, waiting longer does not change that.
    """
    all_down: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        log.debug("kafka probe: %s", error.str())
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            all_down.append(error)

    admin = AdminClient(kafka.client(logger=_PROBE_LOG, error_cb=on_error))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = admin.list_topics(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if all_down or time.monotonic() >= deadline:
                log.debug("metadata request to %s failed: %s", kafka.bootstrap_servers, exc)
                raise KafkaUnreachable(f"cannot reach Kafka at {kafka.bootstrap_servers}", UNREACHABLE_HINT) from exc
    missing = sorted(t for t in set(topics) if t not in metadata.topics or metadata.topics[t].error is not None)
    if missing:
        raise MissingTopics(f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found on Kafka at "
                            f"{kafka.bootstrap_servers}", "create the topics with `fleetstream topics create`")


class _Flushable(Protocol):
    def flush(self, timeout: float) -> int: ...


@dataclass
class _Round:
    """The messages produced since the last `confirm` and the answers they got so far."""

    produced: int = 0
    acknowledged: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def answered(self) -> int:
        return self.acknowledged + sum(self.reasons.values())


class DeliveryTracker:
    """The delivery accounting of one producer: every message produced must get an acknowledging report.

    Call `produced()` for each message handed to the client and `report(err, round_)` from its delivery
    callback, `round_` being `current_round` when it was produced. `confirm` judges the messages of the
    current round and starts the next, so a long-running caller (a poller) recovers after a failed round,
    and a late answer for an earlier round cannot pass for one of the current round.

    A failed report is logged once (the first), then only counted: a broker that is down fails every
    message, and one line per message is noise that hides the summary `DeliveryError` gives.
    """

    def __init__(self, servers: str) -> None:
        self.servers = servers
        self.produced_messages = 0
        self.acknowledged = 0
        self.failed = 0
        self.last_error: KafkaError | None = None
        self.current_round = 0
        self._round = _Round()

    @property
    def in_flight(self) -> int:
        """Messages produced that have no delivery report yet (all rounds)."""
        return self.produced_messages - self.acknowledged - self.failed

    def produced(self, count: int = 1) -> None:
        self.produced_messages += count
        self._round.produced += count

    def report(self, err: KafkaError | None, round_: int, topic: str = "") -> bool:
        """Count one delivery report of a message produced in `round_`; True if the broker acknowledged it."""
        current = self._round if round_ == self.current_round else None
        if err is None:
            self.acknowledged += 1
            if current is not None:
                current.acknowledged += 1
            return True
        self.failed += 1
        self.last_error = err
        if current is not None:
            current.reasons[err.str()] += 1
        if self.failed == 1:
            log.warning("delivery to %s failed: %s (further failures are counted, not logged)", topic or "kafka",
                        err.str())
        return False

    def confirm(self, producer: _Flushable, timeout_s: float) -> None:
        """Flush `producer` for at most `timeout_s`; raise `DeliveryError` unless every message produced since
        the last `confirm` was acknowledged. Either way the next round starts."""
        producer.flush(timeout_s)
        done, self._round = self._round, _Round()
        self.current_round += 1
        unacknowledged = done.produced - done.acknowledged
        if unacknowledged:
            parts = [f"{reason}: {count}" for reason, count in done.reasons.most_common(3)]
            if done.produced > done.answered:
                parts.append(f"{done.produced - done.answered} unanswered after {timeout_s:g} s")
            raise DeliveryError(unacknowledged, done.produced, self.servers, "; ".join(parts))
