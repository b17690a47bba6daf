"""What the worker sends, sized to fit, and sent so that it is acknowledged before its input counts as done.

Kafka's default limits accept an input value of up to about 1 MB (the broker's `max.message.bytes`, 1,048,588),
but what the worker makes of it can be larger than faust's producer accepts (`max_request_size`, 1,000,000
bytes, key and record overhead included): a valid batch re-encoded, or a dead letter that wraps the input.
Sending it failed, and either the input was acked with nothing sent or the worker crashed on it forever. So an
output above `OUTPUT_LIMIT_BYTES` is made to fit before it is sent:

- a batch (a record with a samples array) is split into consecutive parts, each a record of its own with the
  batch id `<batch id>/<i>-of-<n>` (the sinks deduplicate by batch id, so the parts must differ; the same input
  always splits the same way, so a replay repeats the same parts);
- a dead letter keeps its envelope, reason and sample count, without the original bytes: the reason says so and
  where the original is (its source topic, partition and offset, until retention deletes it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from fleetstream.schemas.codec import Codec
from fleetstream.topics import SAMPLES_FIELD, is_dead_letter_topic, record_type_of

__all__ = ["OUTPUT_LIMIT_BYTES", "Output", "deliver", "fit"]

Output = tuple[str, bytes | None, bytes]

OUTPUT_LIMIT_BYTES = 990_000
"""Largest value the worker sends: under faust's producer limit (1,000,000 bytes with key and overhead) and the
broker's default `max.message.bytes`."""


def fit(outputs: list[Output], limit: int = OUTPUT_LIMIT_BYTES, codec: Codec | None = None) -> list[Output]:
    """`outputs` with every value above `limit` split (batches) or stripped of its original (dead letters);
    `codec` is the worker's serializer (single-object framing by default)."""
    if all(len(value) <= limit for _, _, value in outputs):
        return outputs
    codec = codec or Codec()
    fitted: list[Output] = []
    for topic, key, value in outputs:
        if len(value) <= limit:
            fitted.append((topic, key, value))
        elif is_dead_letter_topic(topic):
            fitted.append((topic, key, _strip_letter(codec, topic, value, limit)))
        else:
            fitted += [(topic, key, part) for part in split_batch(record_type_of(topic), value, limit, codec, topic)]
    return fitted


def split_batch(record_type: str, value: bytes, limit: int, codec: Codec | None = None, topic: str = ""
                ) -> list[bytes]:
    """An encoded batch as consecutive parts of at most `limit` bytes each (ValueError if it has no samples
    array, or one sample alone is too large)."""
    field = SAMPLES_FIELD.get(record_type)
    if field is None:
        raise ValueError(f"a {record_type} record of {len(value)} bytes exceeds {limit} bytes and cannot be split")
    codec = codec or Codec()
    record = codec.decode(value, record_type)
    items: list[Any] = record[field]
    parts = max(2, math.ceil(len(value) / (limit * 0.9)))
    while parts <= len(items):
        size = math.ceil(len(items) / parts)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        encoded = [codec.encode(record_type, {**record, field: chunk,
                                              "batch_id": f"{record['batch_id']}/{n + 1}-of-{len(chunks)}"}, topic)
                   for n, chunk in enumerate(chunks)]
        if all(len(part) <= limit for part in encoded):
            return encoded
        parts *= 2
    raise ValueError(f"a {record_type} record of {len(value)} bytes cannot be split under {limit} bytes")


def _strip_letter(codec: Codec, topic: str, value: bytes, limit: int) -> bytes:
    envelope = codec.decode(value, "dead_letter")
    original = envelope["original"]
    note = (f" [original of {len(original)} bytes not carried: the dead letter would exceed {limit} bytes; it is "
            f"{envelope['source_topic']}[{envelope['partition']}]@{envelope['offset']} until retention]")
    stripped = codec.encode("dead_letter", {**envelope, "original": b"", "reason": envelope["reason"][:10_000] + note},
                            topic)
    if len(stripped) > limit:  # pragma: no cover - the envelope's other fields are small
        raise ValueError(f"a dead letter of {len(stripped)} bytes exceeds {limit} bytes without its original")
    return stripped


async def deliver(sinks: Mapping[str, Any], outputs: list[Output]) -> None:
    """Send and wait until the broker has acknowledged every record (raises if one cannot be delivered)."""
    pending = [await sinks[topic].send(key=key, value=value) for topic, key, value in outputs]
    if pending:
        await asyncio.gather(*pending)
