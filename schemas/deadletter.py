"""The dead-letter envelope: the failing bytes plus everything a person needs to find, fix and replay them.

Part of the contract because every stage that can fail (streams, sinks) writes the same envelope: build it
with `dead_letter_envelope` (a stage with its own serializer encodes it itself) or `dead_letter` (encoded
with the process's serializer, addressed to the source topic's dead-letter topic).
"""

from __future__ import annotations

from typing import Any

from fleetstream.schemas.codec import Codec
from fleetstream.topics import dead_letter_topic

__all__ = ["dead_letter", "dead_letter_envelope"]


def dead_letter_envelope(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    original: bytes,
    stage: str,
    error_code: str,
    reason: str,
    sample_count: int,
    now_ms: int,
    attempt: int = 1,
) -> dict[str, Any]:
    """The `dead_letter` record for one failure, as the schema names its fields."""
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "original": original,
        "stage": stage,
        "error_code": error_code,
        "reason": reason,
        "sample_count": sample_count,
        "first_seen_ms": now_ms,
        "attempt": attempt,
    }


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    original: bytes,
    stage: str,
    error_code: str,
    reason: str,
    sample_count: int,
    now_ms: int,
    attempt: int = 1,
    codec: Codec | None = None,
) -> tuple[str, bytes | None, bytes]:
    """(dlq topic, key, encoded envelope) for one failure; the key is kept so a vehicle's letters stay together.

    `codec`: the process's serializer (single-object framing by default)."""
    envelope = dead_letter_envelope(source_topic=source_topic, partition=partition, offset=offset, key=key,
                                    original=original, stage=stage, error_code=error_code, reason=reason,
                                    sample_count=sample_count, now_ms=now_ms, attempt=attempt)
    topic = dead_letter_topic(source_topic)
    return topic, key, (codec or Codec()).encode("dead_letter", envelope, topic)
