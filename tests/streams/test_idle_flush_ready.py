"""Which partitions the idle flush may close (unit tests, no broker): processed to the end, durably, by whoever
owns each input partition."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from fleetstream.streams.app import _ready_partitions
from fleetstream.streams.offsets import OffsetBook
from tests.streams.test_offsets import _Table

RAW, VALID = "telemetry.signals", "telemetry.signals.valid"


class _Consumer:
    """The consumer's surface `_ready_partitions` uses: its assignment, the group's offsets, the end offsets."""

    def __init__(self, assignment: set[TP], committed: dict[TP, int], ends: dict[TP, int]):
        self._assignment, self.committed, self.ends = assignment, committed, ends

    def assignment(self) -> set[TP]:
        return self._assignment

    async def group_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: self.committed[tp] for tp in tps if tp in self.committed}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends.get(tp, 0) for tp in tps}


def _ready(book: OffsetBook, consumer: _Consumer) -> set[int]:
    return asyncio.run(_ready_partitions(SimpleNamespace(consumer=consumer), book, [RAW, VALID], [VALID],  # type: ignore[arg-type]
                                         partitions=2))


def _book(durable: dict[TP, int]) -> OffsetBook:
    book = OffsetBook(_Table(), [RAW, VALID], {})
    for tp, offset in durable.items():
        book.table.data[f"{tp.topic}#{tp.partition}"] = {"next": offset, "_partition": tp.partition}
    return book


def test_a_raw_batch_admitted_but_not_yet_delivered_keeps_its_partition_from_the_flush() -> None:
    raw, valid = TP(RAW, 0), TP(VALID, 0)
    consumer = _Consumer({raw, valid}, committed={}, ends={raw: 10, valid: 6})
    book = _book({raw: 6, valid: 6})
    book.expected[raw] = 10  # admitted up to the end; its .valid outputs are not written yet
    assert _ready(book, consumer) == set()
    book.table.data[f"{RAW}#0"] = {"next": 10, "_partition": 0}  # delivered and durable
    assert _ready(book, consumer) == {0}


def test_input_partitions_another_worker_owns_are_judged_by_the_groups_committed_offsets() -> None:
    raw, valid = TP(RAW, 1), TP(VALID, 1)
    consumer = _Consumer({valid}, committed={raw: 7}, ends={raw: 9, valid: 4})
    book = _book({valid: 4})
    assert _ready(book, consumer) == set()  # the other worker has raw[1] up to 7 of 9
    consumer.committed[raw] = 9
    assert _ready(book, consumer) == {1}


def test_keys_of_partitions_whose_state_this_worker_does_not_own_are_never_flushed() -> None:
    raw = TP(RAW, 0)
    consumer = _Consumer({raw}, committed={TP(VALID, 0): 0}, ends={})
    assert _ready(_book({raw: 0}), consumer) == set()
