"""fleetstream.kafka and the librdkafka log sink: delivery accounting, the reachability probe, rate-limited logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError

from fleetstream.config import KafkaSettings
from fleetstream.kafka import DeliveryError, DeliveryTracker, KafkaUnreachable, MissingTopics, require_kafka
from fleetstream.logs import LibrdkafkaLog

Callback = Callable[[KafkaError | None, Any], object]


class FakeProducer:
    """Holds delivery callbacks until `flush`, then answers them with the scripted errors (None = acknowledged).

    `answer` limits how many are answered per flush: the rest stay in flight, as when a broker is slow.
    """

    def __init__(self, tracker: DeliveryTracker, outcomes: list[KafkaError | None], answer: int | None = None):
        self.tracker, self.outcomes, self.answer = tracker, list(outcomes), answer
        self.pending: list[tuple[Callback, KafkaError | None]] = []
        self.flush_timeouts: list[float] = []

    def produce(self, on_delivery: Callback) -> None:
        self.pending.append((on_delivery, self.outcomes.pop(0)))
        self.tracker.produced()

    def flush(self, timeout: float) -> int:
        self.flush_timeouts.append(timeout)
        count = len(self.pending) if self.answer is None else min(self.answer, len(self.pending))
        for callback, outcome in self.pending[:count]:
            callback(outcome, None)
        del self.pending[:count]
        return len(self.pending)


def send(tracker: DeliveryTracker, producer: FakeProducer, count: int) -> None:
    """Produce `count` messages the way the project's callers do: the callback remembers its round."""
    def callback(round_: int) -> Callback:
        return lambda err, _msg: tracker.report(err, round_, "dyno.samples")

    for _ in range(count):
        producer.produce(callback(tracker.current_round))


def produce_all(outcomes: list[KafkaError | None], answer: int | None = None) -> tuple[DeliveryTracker, FakeProducer]:
    tracker = DeliveryTracker("broker:9092")
    producer = FakeProducer(tracker, outcomes, answer)
    send(tracker, producer, len(outcomes))
    return tracker, producer


TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)
TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)


def test_confirm_returns_when_every_message_was_acknowledged() -> None:
    tracker, producer = produce_all([None] * 5)
    tracker.confirm(producer, 7.0)
    assert producer.flush_timeouts == [7.0]
    assert (tracker.acknowledged, tracker.failed, tracker.in_flight) == (5, 0, 0)


def test_failed_delivery_reports_raise_with_the_counts_and_reasons() -> None:
    tracker, producer = produce_all([None, TIMED_OUT, None, TIMED_OUT, TOO_LARGE])
    with pytest.raises(DeliveryError) as raised:
        tracker.confirm(producer, 1.0)
    error = raised.value
    assert (error.unacknowledged, error.total) == (3, 5)
    assert str(error) == "3 of 5 messages were not acknowledged by Kafka at broker:9092"
    assert error.hint == "Local: Message timed out: 2; Broker: Message size too large: 1"


def test_messages_still_unanswered_at_the_deadline_count_as_unacknowledged() -> None:
    tracker, producer = produce_all([None] * 4, answer=1)
    with pytest.raises(DeliveryError) as raised:
        tracker.confirm(producer, 2.5)
    assert (raised.value.unacknowledged, raised.value.total) == (3, 4)
    assert raised.value.hint == "3 unanswered after 2.5 s"


def test_counts_start_again_after_a_successful_confirm() -> None:
    tracker, producer = produce_all([None, None])
    tracker.confirm(producer, 1.0)
    producer.outcomes = [None, TIMED_OUT]
    send(tracker, producer, 2)
    with pytest.raises(DeliveryError, match=r"^1 of 2 messages"):
        tracker.confirm(producer, 1.0)


def test_a_failed_round_does_not_fail_the_next_one() -> None:
    """A poller keeps publishing after a broker outage: once the broker is back, its rounds succeed again."""
    tracker, producer = produce_all([TIMED_OUT, TIMED_OUT])
    with pytest.raises(DeliveryError, match=r"^2 of 2 messages"):
        tracker.confirm(producer, 1.0)
    producer.outcomes = [None, None, None]
    send(tracker, producer, 3)
    tracker.confirm(producer, 1.0)
    assert (tracker.acknowledged, tracker.failed) == (3, 2)


def test_a_late_answer_from_an_earlier_round_does_not_pass_for_the_current_one() -> None:
    tracker, producer = produce_all([None, None], answer=1)
    with pytest.raises(DeliveryError, match=r"^1 of 2 messages"):
        tracker.confirm(producer, 1.0)  # one message still unanswered
    producer.answer = None
    producer.outcomes = [TIMED_OUT]
    send(tracker, producer, 1)
    with pytest.raises(DeliveryError) as raised:  # the earlier round's late acknowledgement arrives now
        tracker.confirm(producer, 1.0)
    assert (raised.value.unacknowledged, raised.value.total) == (1, 1)
    assert tracker.in_flight == 0


def test_only_the_first_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tracker, producer = produce_all([TIMED_OUT] * 50)
    with caplog.at_level(logging.WARNING, logger="fleetstream.kafka"), pytest.raises(DeliveryError):
        tracker.confirm(producer, 1.0)
    assert len(caplog.records) == 1


def test_probe_of_an_address_where_nothing_listens_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(KafkaUnreachable) as raised:
        require_kafka(KafkaSettings(bootstrap_servers="127.0.0.1:1"), timeout_s=5.0)
    assert str(raised.value) == "cannot reach Kafka at 127.0.0.1:1"
    assert raised.value.hint == "is the broker running? set KAFKA_BOOTSTRAP_SERVERS"
    assert time.monotonic() - started < 5.0 + 1.0


@pytest.mark.integration
def test_probe_names_the_missing_topics(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    present = topic_factory()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    require_kafka(kafka, [present])
    with pytest.raises(MissingTopics, match=r"^topic no\.such\.topic not found on Kafka at ") as raised:
        require_kafka(kafka, [present, "no.such.topic"])
    assert "fleetstream topics create" in raised.value.hint


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def librdkafka_line(text: str) -> tuple[int, str, str, str, str]:
    """What confluent-kafka passes to a `logger`: level, format, facility, client name, text."""
    return logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-3", text


REFUSED = ("127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
           "(after {} ms in state CONNECT{})")


def test_repeated_librdkafka_lines_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    sink = LibrdkafkaLog(interval_s=30.0, logger=logging.getLogger("test.librdkafka"), clock=clock)
    with caplog.at_level(logging.DEBUG, logger="test.librdkafka"):
        for step in range(600):  # ten minutes of reconnect attempts, one a second, counters changing
            clock.now += 1.0
            sink.log(*librdkafka_line(REFUSED.format(step % 3, f", {step} identical error(s) suppressed")))
        sink.log(*librdkafka_line("1/1 brokers are down"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 600 // 30 + 1
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert messages[0].startswith("FAIL [rdkafka#producer-3] 127.0.0.1:1/bootstrap: Connect to")
    assert messages[1].endswith("(29 similar lines suppressed)")
    assert messages[-1] == "FAIL [rdkafka#producer-3] 1/1 brokers are down"


def test_a_level_cap_turns_librdkafka_lines_into_debug(caplog: pytest.LogCaptureFixture) -> None:
    sink = LibrdkafkaLog(logger=logging.getLogger("test.librdkafka.probe"), max_level=logging.DEBUG)
    with caplog.at_level(logging.INFO, logger="test.librdkafka.probe"):
        sink.log(*librdkafka_line("1/1 brokers are down"))
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="test.librdkafka.probe"):
        sink.log(*librdkafka_line("1/1 brokers are down"))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
