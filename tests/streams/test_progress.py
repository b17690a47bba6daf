"""The worker's gap guard: skipped offsets are sought back to, replayed ones are not processed twice."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.app import Progress


class _Consumer:
    def __init__(self, log_start: int = 0) -> None:
        self.seeks: list[tuple[str, int]] = []
        self.log_start = log_start

    async def seek(self, tp: str, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def earliest_offsets(self, *tps: str) -> dict[str, int]:
        return dict.fromkeys(tps, self.log_start)


def _events(*pairs: tuple[str, int]) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset)) for tp, offset in pairs]


def _admit(progress: Progress, app: Any, *pairs: tuple[str, int]) -> list[tuple[str, int]]:
    admitted = asyncio.run(progress.admit(app, _events(*pairs)))
    progress.done(admitted)
    return [(e.message.tp, e.message.offset) for e in admitted]


def test_contiguous_offsets_pass_and_replays_are_dropped() -> None:
    progress, app = Progress(), SimpleNamespace(consumer=_Consumer())
    assert _admit(progress, app, ("a", 5), ("a", 6), ("b", 0)) == [("a", 5), ("a", 6), ("b", 0)]
    assert _admit(progress, app, ("a", 5), ("a", 6), ("a", 7)) == [("a", 7)]
    assert app.consumer.seeks == []


def test_a_skipped_offset_is_sought_back_once_and_then_processed_in_order() -> None:
    progress, app = Progress(), SimpleNamespace(consumer=_Consumer())
    _admit(progress, app, ("a", 10), ("b", 3))
    # faust skipped offset 11 of "a": 12 and 13 wait until 11 is read again; "b" is not held up
    assert _admit(progress, app, ("a", 12), ("b", 4), ("a", 13)) == [("b", 4)]
    assert app.consumer.seeks == [("a", 11)]
    assert _admit(progress, app, ("a", 14)) == []  # prefetched beyond the gap: no second seek at once
    assert app.consumer.seeks == [("a", 11)]
    assert _admit(progress, app, ("a", 11), ("a", 12), ("a", 13)) == [("a", 11), ("a", 12), ("a", 13)]
    assert progress.next == {"a": 14, "b": 5}


def test_revoked_partitions_start_afresh() -> None:
    progress, app = Progress(), SimpleNamespace(consumer=_Consumer())
    _admit(progress, app, ("a", 10))
    progress.on_revoked(app, {"a"})
    assert _admit(progress, app, ("a", 500)) == [("a", 500)]  # another worker moved it on meanwhile
    assert app.consumer.seeks == []


def test_offsets_deleted_by_retention_are_reported_and_passed() -> None:
    # The worker fell more than the retention behind: 11..19 are gone, so seeking back to 11 would loop forever.
    progress, app = Progress(), SimpleNamespace(consumer=_Consumer(log_start=20))
    _admit(progress, app, ("a", 10))
    assert _admit(progress, app, ("a", 25)) == []
    assert app.consumer.seeks == [("a", 20)]
    assert _admit(progress, app, ("a", 20), ("a", 21)) == [("a", 20), ("a", 21)]
