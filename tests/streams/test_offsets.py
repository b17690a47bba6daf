"""The worker's owned offsets: the gap guard, where a partition resumes, what is committed (unit tests, no broker).

The broker-side proof is test_worker_kills; here the book's decisions are checked one by one.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest

from fleetstream.streams import offsets
from fleetstream.streams.offsets import OffsetBook, instance_id


class _Table:
    """A faust table's surface the book uses: `data` and an acknowledged `send_changelog`."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog: list[tuple[int, str, dict[str, Any]]] = []

    async def send_changelog(self, partition: int, key: str, value: dict[str, Any]) -> None:
        self.changelog.append((partition, key, value))


class _Consumer:
    def __init__(self, log_start: int = 0) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.log_start = log_start

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, self.log_start)


class TP(NamedTuple):
    topic: str
    partition: int


A, B = TP("raw", 0), TP("raw", 1)


def _events(*pairs: tuple[Any, int]) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset)) for tp, offset in pairs]


def _book() -> tuple[OffsetBook, Any]:
    return OffsetBook(_Table(), ["raw"], {}), SimpleNamespace(consumer=_Consumer(), rebalancing=False)


def _process(book: OffsetBook, app: Any, *pairs: tuple[Any, int]) -> list[tuple[Any, int]]:
    admitted = asyncio.run(book.admit(app, _events(*pairs)))
    asyncio.run(book.persist(admitted))
    return [(e.message.tp, e.message.offset) for e in admitted]


def test_a_partition_resumes_at_its_owned_offset_not_at_the_group_commit() -> None:
    book, app = _book()
    book.table.data["raw#0"] = {"next": 40, "_partition": 0}
    assert book.start(A, committed=95) == 40  # faust committed 95: 40..94 were acked but never processed
    assert book.start(B, committed=7) == 7  # never owned: the group's offset (an upgrade from the old worker)
    assert book.start(B, committed=None) is None  # nor committed: the log start
    book.positioned(A, 40)
    book.positioned(B, 7)
    assert _process(book, app, (A, 38), (A, 39), (A, 40), (B, 7)) == [(A, 40), (B, 7)]


def test_offsets_are_written_after_processing_and_committed_only_once_durable() -> None:
    book, app = _book()
    book.positioned(A, 0)
    assert book.committable([A, B]) == {}
    _process(book, app, (A, 0), (A, 1), (A, 2))
    assert book.table.changelog == [(0, "raw#0", {"next": 3, "_partition": 0})]
    assert book.committable([A, B]) == {A: 3}
    book.committed({A: 3})
    assert book.committable([A, B]) == {}
    assert book.committable([TP("other", 0)]) == {}


def test_a_gap_is_never_skipped_it_is_read_again() -> None:
    book, app = _book()
    book.positioned(A, 10)
    book.positioned(B, 0)
    assert _process(book, app, (A, 10), (B, 0)) == [(A, 10), (B, 0)]
    # faust skipped 11 and 12 of A: 13 and 14 wait until 11 is read again; B is not held up
    assert _process(book, app, (A, 13), (B, 1), (A, 14)) == [(B, 1)]
    assert app.consumer.seeks == [(A, 11)]
    assert _process(book, app, (A, 15)) == []  # prefetched before the seek back: no second seek
    assert app.consumer.seeks == [(A, 11)]
    assert _process(book, app, (A, 11), (A, 12), (A, 13)) == [(A, 11), (A, 12), (A, 13)]
    assert book.durable(A) == 14


def test_after_a_seek_a_gap_passes_only_when_the_log_holds_nothing_there(monkeypatch: pytest.MonkeyPatch) -> None:
    book, app = _book()
    book.positioned(A, 5)
    log_from: dict[int, int] = {5: 9}  # offsets 5..8 are transaction markers or were deleted by retention
    monkeypatch.setattr(offsets, "first_offset_from", lambda config, topic, partition, offset: log_from[offset])
    assert _process(book, app, (A, 9)) == [(A, 9)]
    assert app.consumer.seeks == []
    # the same jump while the log does hold offset 10: skipped by the stream, so sought back
    book.positioned(A, 10)
    log_from[10] = 10
    assert _process(book, app, (A, 12)) == []
    assert app.consumer.seeks == [(A, 10)]


def test_a_gap_that_does_not_come_again_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    book, app = _book()
    book.positioned(A, 0)
    _process(book, app, (A, 0))
    _process(book, app, (A, 5))
    exits: list[int] = []
    monkeypatch.setattr(offsets.os, "_exit", exits.append)
    monkeypatch.setattr(OffsetBook, "REWIND_DEADLINE_S", 0.0)
    _process(book, app, (A, 6))
    assert exits == [offsets.EXIT_UNRECOVERABLE_GAP]


def test_revoked_partitions_are_forgotten_until_assigned_again() -> None:
    book, app = _book()
    book.positioned(A, 0)
    _process(book, app, (A, 0))
    book.forget([A])
    assert A not in book.expected
    book.table.data["raw#0"] = {"next": 500, "_partition": 0}  # another worker moved it on meanwhile
    assert book.start(A, committed=None) == 500


def test_events_fetched_before_the_partition_was_positioned_are_dropped() -> None:
    book, app = _book()
    assert _process(book, app, (A, 28), (A, 29)) == []  # from before a rebalance: the new position is unknown
    assert app.consumer.seeks == []
    book.positioned(A, 20)
    assert _process(book, app, (A, 20), (A, 21)) == [(A, 20), (A, 21)]


def test_processed_to_end_needs_progress_at_the_end_offset() -> None:
    assert offsets.processed_to_end(10, 10) and offsets.processed_to_end(None, 0)
    assert not offsets.processed_to_end(None, 10) and not offsets.processed_to_end(9, 10)
    assert not offsets.processed_to_end(10, None)


def test_a_positioned_partition_that_does_not_move_with_records_waiting_is_stalled() -> None:
    book, app = _book()
    book.positioned(A, 5)
    book.positioned(B, 7)
    assert book.stalled({A: 9, B: 7}, now_s=0.0) == []
    assert book.stalled({A: 9, B: 7}, now_s=book.STALL_S + 1) == [A]  # B has nothing waiting
    _process(book, app, (A, 5))
    assert book.stalled({A: 9}, now_s=book.STALL_S + 2) == []  # it moved: the clock starts again
    assert book.stalled({A: 9}, now_s=2 * book.STALL_S + 3) == [A]
    book.reset_progress()  # a rebalance
    assert book.stalled({A: 9}, now_s=2 * book.STALL_S + 4) == []


def test_a_stalled_partition_is_sought_again_once_before_the_worker_gives_up() -> None:
    book, app = _book()
    book.positioned(A, 5)
    book.stalled({A: 9}, now_s=0.0)
    stalled = book.stalled({A: 9}, now_s=book.STALL_S + 1)
    assert book.to_seek_again(stalled, now_s=book.STALL_S + 1) == [A]  # first: seek again, give it STALL_S more
    assert book.stalled({A: 9}, now_s=book.STALL_S + 2) == []
    stalled = book.stalled({A: 9}, now_s=2 * book.STALL_S + 2)
    assert stalled == [A] and book.to_seek_again(stalled, now_s=2 * book.STALL_S + 2) == []  # still stuck: give up
    _process(book, app, (A, 5))  # it moved after all: a later stall gets its seek again
    book.stalled({A: 9}, now_s=3 * book.STALL_S)
    stalled = book.stalled({A: 9}, now_s=4 * book.STALL_S + 1)
    assert book.to_seek_again(stalled, now_s=4 * book.STALL_S + 1) == [A]


def test_instance_ids_are_stable_per_slot_and_distinct_between_live_workers(tmp_path: Any) -> None:
    first, first_lock = instance_id("app", None, tmp_path)
    second, second_lock = instance_id("app", None, tmp_path)
    assert first.endswith("-0") and second.endswith("-1")
    first_lock.close()  # the first worker died: its successor takes its slot back
    again, again_lock = instance_id("app", None, tmp_path)
    assert again == first
    again_lock.close()
    second_lock.close()
    assert instance_id("app", "configured-id", tmp_path) == ("configured-id", None)


def test_a_seek_back_whose_offset_does_not_come_is_sought_again(monkeypatch: pytest.MonkeyPatch) -> None:
    book, app = _book()
    book.positioned(A, 0)
    _process(book, app, (A, 0))
    _process(book, app, (A, 5))  # 1..4 skipped by the stream: sought back to 1
    assert app.consumer.seeks == [(A, 1)]
    asyncio.run(book.retry_rewinds(app))
    assert app.consumer.seeks == [(A, 1)]  # not yet: it may still come
    monkeypatch.setattr(OffsetBook, "RESEEK_S", 0.0)
    asyncio.run(book.retry_rewinds(app))
    assert app.consumer.seeks == [(A, 1), (A, 1)]
    _process(book, app, (A, 1))  # it came: no more seeks
    asyncio.run(book.retry_rewinds(app))
    assert app.consumer.seeks == [(A, 1), (A, 1)]
