"""Committing a partition's offsets to Kafka after its batch is recorded `after`.

A commit that fails is logged and reported, not raised: the range is already recorded `after` in
`sink_offsets`, so a lost commit costs a skip of re-delivered offsets on restart, never a duplicate.
Messages skipped as already stored are committed once per poll, not per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

__all__ = ["Commits"]

log = logging.getLogger(__name__)


class Commits:
    """Synchronous offset commits of one consumer, and the pending commits of skipped re-deliveries."""

    def __init__(self, consumer: Consumer, on_error: Callable[[str], None]):
        self._consumer = consumer
        self._on_error = on_error
        self._skipped: dict[tuple[str, int], int] = {}

    def commit(self, topic: str, partition: int, next_offset: int) -> None:
        """Commit `next_offset` (the offset after the last stored message) of `topic`/`partition`."""
        try:
            self._consumer.commit(offsets=[TopicPartition(topic, partition, next_offset)], asynchronous=False)
        except Exception as exc:  # the batch is recorded `after`, so a lost commit costs a skip, not a duplicate
            log.warning("commit of %s[%d]@%d failed: %s", topic, partition, next_offset, exc)
            self._on_error(f"commit of {topic}[{partition}]: {exc}")

    def skipped(self, topic: str, partition: int, offset: int) -> None:
        """A re-delivered message at `offset` was skipped as already stored: commit past it on the next flush."""
        self._skipped[(topic, partition)] = offset + 1

    def commit_skipped(self) -> None:
        """Commit past every skipped re-delivery since the last call."""
        while self._skipped:
            (topic, partition), next_offset = self._skipped.popitem()
            self.commit(topic, partition, next_offset)
