"""Batch ids the sink already stored: a re-sent copy is skipped, a reused id with other content dead-lettered.

Producers give each record a `batch_id`; the sink keeps, per stream, the ids it stored with the digest of
the record's bytes (table `ingested_batches`). A record whose id is known is a re-sent copy when its bytes
are the same (at-least-once upstream: skipped) and a conflict when they differ (two sources or runs reused
the id: dead-lettered, so the second one's data is not lost silently). `sort_out` is the pure decision;
`IngestedBatches` reads and writes the table.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from fleetstream.sinks.clickhouse.batches import Batch, Buffered
from fleetstream.sinks.clickhouse.deadletters import Rejected, undecodable
from fleetstream.sinks.clickhouse.inserts import insert_batch
from fleetstream.store.client import DATABASE, Client

__all__ = ["IngestedBatches", "Sorted", "StoredId", "digest_of", "sort_out", "stream_of"]

log = logging.getLogger(__name__)


def stream_of(topic: str) -> str:
    """The stream a topic belongs to, for batch identities: `telemetry.signals.valid` → `telemetry.signals`."""
    return topic.removesuffix(".valid")


def digest_of(raw: bytes) -> str:
    """The content digest kept with a batch id: equal bytes, equal digest (producers encode deterministically)."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass(frozen=True)
class StoredId:
    """Where a batch id was first stored, and the digest of that record's bytes ('' before migration 015)."""

    digest: str
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class Sorted:
    """A batch's messages sorted out: to store, to dead-letter, and how many were re-sent copies or conflicts."""

    good: list[Buffered] = field(default_factory=list)
    dead: list[Rejected] = field(default_factory=list)
    redelivered: int = 0
    conflicts: int = 0


def sort_out(batch: Batch, known: dict[str, StoredId]) -> Sorted:
    """Decide per message of `batch` given the batch ids stored before (`known`, as `IngestedBatches.known`).

    Undecodable messages and conflicting ids are dead-lettered; re-sent copies and repeats inside the batch
    are left out; the rest is stored.
    """
    known = dict(known)
    result = Sorted()
    for item in batch.items:
        if item.record is None:
            result.dead.append(undecodable(item))
            continue
        batch_id = item.record.get("batch_id")
        if batch_id is not None:
            first = known.get(batch_id)
            if first is not None and first.digest not in ("", digest_of(item.raw)):
                result.dead.append(_conflict(batch, item, batch_id, first))
                result.conflicts += 1
                continue
            if first is not None:
                result.redelivered += 1
                continue
            known[batch_id] = StoredId(digest_of(item.raw), batch.topic, batch.partition, item.offset)
        result.good.append(item)
    return result


def _conflict(batch: Batch, item: Buffered, batch_id: str, first: StoredId) -> Rejected:
    log.warning("batch id %s of %s[%d]@%d was stored from %s with other content: dead-lettered", batch_id,
                batch.topic, batch.partition, item.offset, first)
    return Rejected(item, "batch_id_conflict",
                    f"batch id {batch_id!r} was already stored from {first} with other content; this record "
                    f"was not stored (a source or run reused the id)", item.rows)


def _batch_ids(items: list[Buffered]) -> list[tuple[Buffered, str]]:
    return [(i, i.record["batch_id"]) for i in items if i.record is not None and "batch_id" in i.record]


class IngestedBatches:
    """The `ingested_batches` table: batch ids stored per stream, where, and with which digest."""

    def __init__(self, client: Client):
        self._client = client

    def known(self, batch: Batch) -> dict[str, StoredId]:
        """Batch ids of this batch's records that an earlier batch of the same stream stored."""
        ids = [batch_id for _, batch_id in _batch_ids(batch.items)]
        if not ids:
            return {}
        found = self._client.query(
            f"SELECT batch_id, digest, topic, partition, offset FROM {DATABASE}.ingested_batches "
            "WHERE stream = {stream:String} AND batch_id IN {ids:Array(String)} "
            "AND NOT (topic = {topic:String} AND partition = {partition:Int32} "
            "AND offset BETWEEN {first:Int64} AND {last:Int64}) ORDER BY ingested_at DESC",
            parameters={"stream": stream_of(batch.topic), "ids": ids, "topic": batch.topic,
                        "partition": batch.partition, "first": batch.first_offset, "last": batch.last_offset})
        # oldest last, so it wins: the first copy stored is the one others are compared with
        return {row[0]: StoredId(row[1], row[2], int(row[3]), int(row[4])) for row in found.result_rows}

    def remember(self, batch: Batch, stored: list[Buffered]) -> None:
        """Record the batch ids (and digests) of the records this batch inserted, after the rows themselves."""
        items = _batch_ids(stored)
        if not items:
            return
        columns: dict[str, list[Any]] = {
            "stream": [stream_of(batch.topic)] * len(items),
            "batch_id": [batch_id for _, batch_id in items],
            "topic": [batch.topic] * len(items), "partition": [batch.partition] * len(items),
            "offset": [i.offset for i, _ in items], "digest": [digest_of(i.raw) for i, _ in items]}
        insert_batch(self._client, "ingested_batches", columns, batch.token)
