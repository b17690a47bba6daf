"""The edge producer's delivery accounting against a real broker: success is what the broker acknowledged."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from fleetstream.config import KafkaSettings
from fleetstream.kafka import DeliveryError
from fleetstream.producers.edge import EdgeProducer

pytestmark = [pytest.mark.integration]


def test_messages_the_broker_rejects_make_confirm_raise_with_the_counts(
        kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(config={"max.message.bytes": "2000"})
    producer = EdgeProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    for _ in range(3):
        producer.publish_bytes(topic, "k", b"small", source="test", samples=1)
    assert producer.flush(30) == 0  # the small ones go in their own batch
    for _ in range(2):
        producer.publish_bytes(topic, "k", os.urandom(10_000), source="test", samples=1)  # incompressible
    with pytest.raises(DeliveryError) as raised:
        producer.confirm()
    assert str(raised.value) == f"2 of 5 messages were not acknowledged by Kafka at {kafka_bootstrap}"
    assert raised.value.hint == "Broker: Message size too large: 2"
    assert (producer.delivered_messages, producer.failed_messages) == (3, 2)


def test_leaving_the_with_block_confirms(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(config={"max.message.bytes": "2000"})
    with pytest.raises(DeliveryError, match=r"^1 of 2 messages"), \
            EdgeProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap)) as producer:
        producer.publish_bytes(topic, "k", b"small", source="test", samples=1)
        producer.flush(30)
        producer.publish_bytes(topic, "k", os.urandom(10_000), source="test", samples=1)
    with EdgeProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap)) as producer:
        producer.publish_bytes(topic, "k", b"small", source="test", samples=1)
    assert producer.delivered_messages == 1
