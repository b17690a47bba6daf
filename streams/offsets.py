"""The worker owns its input offsets: where each input partition resumes is kept with the worker's state.

faust's stream can ack input messages it never hands to an agent: an event fetched before a rebalance, or while
flow control is suspended for one, is skipped and acked (`faust.streams.Stream.__aiter__`, the generation and
flow checks), and its consumer declares every offset it did not see between two fetched records "acked" too
(`Consumer._add_gap`, meant for compacted topics). Its next commit then moves the group past messages that were
never processed, and aiokafka's `seek_to_committed` leaves a partition whose committed offset is 0 or missing
where it is, so nothing re-reads them. So the group's committed offsets are not trusted here:

- `OffsetBook` keeps the next offset to process of each input partition in a changelog-backed table (one record
  per partition, in the changelog partition of the same number, so it is recovered with the partition's state).
  An agent writes it after the batch's outputs are acknowledged and its state is written.
- `OwnedOffsetsConsumer` is faust's aiokafka consumer with two hooks: `seek_to_committed` (what faust calls after
  each rebalance, once the tables are recovered and before the flow resumes) seeks every input partition to its
  owned offset, and `_commit` commits the owned offsets instead of faust's acked ones, so the group's offsets
  (what lag tools read) never pass durable progress either.
- `OffsetBook.admit` is the agents' gap guard: events of a partition must arrive in offset order from the owned
  offset on; replays below it are dropped, and a gap is never skipped over (see `admit`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode import Service

__all__ = ["EXIT_RESTART", "EXIT_UNRECOVERABLE_GAP", "OFFSETS_TABLE", "OffsetBook", "OwnedOffsetsConsumer",
           "instance_id", "processed_to_end"]

log = logging.getLogger(__name__)

OFFSETS_TABLE = "input-offsets"
"""The table (and changelog topic suffix) of the owned input offsets."""

EXIT_RESTART = 75
"""Exit status when the worker cannot go on in-process (a gap not re-read, a stalled partition, its group
coordination ended): the supervisor restarts it, and it resumes from its owned offsets (EX_TEMPFAIL)."""

EXIT_UNRECOVERABLE_GAP = EXIT_RESTART


def _key(tp: Any) -> str:
    return f"{tp.topic}#{tp.partition}"


class OffsetBook:
    """The next input offset to process per partition: durable in `table`, expected by the agents in memory.

    `durable` is what the table holds (written only after its changelog record is acknowledged), `expected` is
    the next offset the agent that reads the partition must see. They differ while a batch is in flight, and
    after a seek, when `_fresh` marks that the next event is the first from the new position.
    """

    REWIND_DEADLINE_S = 30.0
    RESEEK_S = 3.0
    STALL_S = 30.0
    """How long an input partition with records waiting may make no progress before the worker gives up."""

    def __init__(self, table: Any, input_topics: Iterable[str], kafka_config: Mapping[str, Any]):
        self.table = table
        self.topics = frozenset(input_topics)
        self.kafka_config = dict(kafka_config)
        self.expected: dict[Any, int] = {}
        self._fresh: set[Any] = set()
        self._rewinding: dict[Any, float] = {}  # partition -> when we sought back to `expected`
        self._reseek: dict[Any, float] = {}  # partition -> when we last sought back again
        self._committed: dict[Any, int] = {}
        self._progress: dict[Any, tuple[int | None, float]] = {}  # partition -> (expected offset, since when)
        self._nudged: set[Any] = set()  # stalled partitions sought again once, until they move

    # --- durable state ----------------------------------------------------------------------------------

    def durable(self, tp: Any) -> int | None:
        state = self.table.data.get(_key(tp))
        return None if state is None else int(state["next"])

    async def persist(self, events: Sequence[Any]) -> None:
        """Record that these events are processed (outputs acknowledged, state written): the next offsets."""
        latest: dict[Any, int] = {}
        for event in events:
            tp = event.message.tp
            latest[tp] = max(latest.get(tp, 0), event.message.offset + 1)
        if not latest:
            return
        states = {tp: {"next": offset, "_partition": tp.partition} for tp, offset in latest.items()}
        await asyncio.gather(*[self.table.send_changelog(tp.partition, _key(tp), state)
                               for tp, state in states.items()])
        for tp, state in states.items():  # only now: the group commit mirrors what is durable
            self.table.data[_key(tp)] = state
            self.expected[tp] = state["next"]

    # --- positions --------------------------------------------------------------------------------------

    def start(self, tp: Any, committed: int | None) -> int | None:
        """Where partition `tp` resumes after an assignment: its owned offset; without one (a partition this
        worker version never processed), the group's committed offset; None means the log start."""
        owned = self.durable(tp)
        return owned if owned is not None else (committed if committed and committed > 0 else None)

    def positioned(self, tp: Any, position: int) -> None:
        """The consumer was sought to `position`: the partition's next event is the first from there."""
        self.expected[tp] = position
        self._fresh.add(tp)
        self._rewinding.pop(tp, None)
        self._reseek.pop(tp, None)
        self._progress.pop(tp, None)

    def forget(self, tps: Iterable[Any]) -> None:
        """Partitions revoked: another worker may move them on before they come back."""
        tps = [tp for tp in tps if tp.topic in self.topics]
        log.info("input partitions revoked: %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps))
        for tp in tps:
            self.expected.pop(tp, None)
            self._fresh.discard(tp)
            self._rewinding.pop(tp, None)
            self._reseek.pop(tp, None)
            self._committed.pop(tp, None)
            self._progress.pop(tp, None)

    def committable(self, assignment: Iterable[Any]) -> dict[Any, int]:
        """Owned offsets of assigned input partitions that the group has not been told yet."""
        offsets = {}
        for tp in assignment:
            if tp.topic in self.topics:
                owned = self.durable(tp)
                if owned is not None and self._committed.get(tp) != owned:
                    offsets[tp] = owned
        return offsets

    def committed(self, offsets: Mapping[Any, int]) -> None:
        self._committed.update(offsets)

    def stalled(self, highwaters: Mapping[Any, int], now_s: float) -> list[Any]:
        """Partitions among `highwaters` (assigned inputs and their end offsets) with records waiting whose
        expected offset has not moved for `STALL_S`: positioned, yet nothing arrives."""
        stalled = []
        for tp, highwater in highwaters.items():
            position = self.expected.get(tp)
            if (position if position is not None else self.durable(tp) or 0) >= highwater:
                self._progress.pop(tp, None)
                self._nudged.discard(tp)
                continue
            seen = self._progress.get(tp)
            if seen is None or seen[0] != position:
                if seen is not None:
                    self._nudged.discard(tp)
                self._progress[tp] = (position, now_s)
            elif now_s - seen[1] > self.STALL_S:
                stalled.append(tp)
        return stalled

    def to_seek_again(self, stalled: Sequence[Any], now_s: float) -> list[Any]:
        """The stalled partitions not yet sought again since they last moved: each gets one seek to its expected
        offset and another `STALL_S` before the worker gives up on it (a fetch that stopped delivering one
        partition resumes from a fresh position; seeking to the expected offset never skips a record)."""
        fresh = [tp for tp in stalled if tp not in self._nudged and self.expected.get(tp) is not None]
        for tp in fresh:
            self._nudged.add(tp)
            self._progress[tp] = (self.expected.get(tp), now_s)
        return fresh

    def reset_progress(self) -> None:
        """A rebalance or a table recovery: no partition is expected to move until it ends."""
        self._progress.clear()

    # --- the gap guard ----------------------------------------------------------------------------------

    async def admit(self, app: faust.App, events: Sequence[Any]) -> list[Any]:
        """The events of this batch to process, in offset order per partition.

        Below the expected offset: processed and durable already, dropped. At it: admitted. Above it:
        - the first event after a seek may be above the position when the offsets between hold no record
          (retention deleted them, or transaction markers): that is asked of the broker, and only then passed;
        - otherwise messages were skipped: the partition's events are dropped from there, the consumer seeks back
          to the expected offset and events are dropped until that offset arrives. If it does not arrive within
          `REWIND_DEADLINE_S`, the process exits (`EXIT_UNRECOVERABLE_GAP`), and the restarted worker resumes
          from its owned offsets: a gap is never skipped over.
        """
        admitted, held = [], set()
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            if tp in held:
                continue
            want = self.expected.get(tp)
            if want is None:
                # Not positioned by this worker since its assignment (fetched before a rebalance): the rebalance's
                # seek brings the partition's records again from its owned offset.
                held.add(tp)
                log.info("%s: events from before this worker's assignment dropped (from offset %d)", tp, offset)
                continue
            if offset < want:
                continue
            if offset > want and not await self._explained(app, tp, want, offset):
                held.add(tp)
                continue
            admitted.append(event)
            self.expected[tp] = offset + 1
            self._fresh.discard(tp)
            self._rewinding.pop(tp, None)
            self._reseek.pop(tp, None)
        return admitted

    async def _explained(self, app: faust.App, tp: Any, want: int, offset: int) -> bool:
        """Whether offsets want..offset-1 hold no record to process (so `offset` may follow `want`); else seek
        back to `want` (once per rewind) and report False."""
        if tp in self._rewinding:
            self.check_rewinds()
            return False  # prefetched before the seek back
        if app.rebalancing:
            return False  # the rebalance ends with a seek to the owned offsets anyway
        if tp in self._fresh:
            first = await asyncio.to_thread(first_offset_from, self.kafka_config, tp.topic, tp.partition, want)
            if first is not None and first >= offset:
                log.warning("%s: offsets %d..%d hold no records (deleted by retention, or transaction markers); "
                            "continuing at %d", tp, want, offset - 1, offset)
                return True
        log.warning("%s: offsets %d..%d were skipped by the stream; seeking back to %d", tp, want, offset - 1, want)
        self._rewinding[tp] = time.monotonic()
        await app.consumer.seek(tp, want)
        return False

    async def retry_rewinds(self, app: faust.App) -> None:
        """Seek again where a seek back has not delivered its offset within `RESEEK_S`.

        The seek can be undone before the offset sought arrives: faust drops fetched records of a partition it
        does not count as active at that moment (around a rebalance), after aiokafka has moved past them, so the
        record sought back to went by unseen, and the partition waited for it until the deadline (exit 75).
        """
        now = time.monotonic()
        for tp, since in list(self._rewinding.items()):
            last = self._reseek.get(tp, since)
            want = self.expected.get(tp)
            if want is None or now - last < self.RESEEK_S or app.rebalancing:
                continue
            self._reseek[tp] = now
            log.warning("%s: offset %d did not come %.0f s after seeking back to it; seeking again", tp, want,
                        now - since)
            await app.consumer.seek(tp, want)

    def check_rewinds(self) -> None:
        """Exit (`EXIT_UNRECOVERABLE_GAP`) if a partition sought back has not delivered its missing offset within
        `REWIND_DEADLINE_S`: the restarted worker resumes from its owned offsets (a crash, never a skip)."""
        now = time.monotonic()
        for tp, since in self._rewinding.items():
            if now - since > self.REWIND_DEADLINE_S:
                log.critical("%s: offsets from %d were skipped by the stream and did not come again within %.0f s "
                             "of seeking back; exiting so that the restarted worker resumes from its owned offsets",
                             tp, self.expected.get(tp), self.REWIND_DEADLINE_S)
                os._exit(EXIT_UNRECOVERABLE_GAP)


def processed_to_end(progress: int | None, highwater: int | None) -> bool:
    """Whether a partition whose processed records end before `progress` (the next offset to process; None:
    nothing processed) holds nothing unprocessed below `highwater` (its end offset; None: unknown)."""
    if highwater is None:
        return False
    return highwater == 0 or (progress is not None and progress >= highwater)


def first_offset_from(kafka_config: Mapping[str, Any], topic: str, partition: int, offset: int,
                      timeout_s: float = 10.0) -> int | None:
    """The offset of the first record at or after `offset` (None: none within `timeout_s`): what the log holds,
    asked with a plain consumer that commits nothing."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**kafka_config, "group.id": "fleetstream-worker-gap-check", "enable.auto.commit": False,
                         "enable.partition.eof": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                return int(message.offset() or 0)
        return None
    finally:
        consumer.close()


class OwnedOffsetsConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer, positioned by and committing the worker's owned offsets (`app.offset_book`).

    It also makes a seek back reliable: faust's fetch loop drops a record whose offset is below the last one it
    delivered (`Consumer._read_offset`), and a batch fetched before the seek, still being delivered, raises that
    mark again after the seek reset it, so the records sought back to were dropped and never came. After `seek`,
    records of the partition are dropped here until the one sought to arrives, and the mark is reset just before
    it is delivered.
    """

    _rewind: dict[Any, int]

    async def seek_to_committed(self) -> Mapping[Any, int]:
        book: OffsetBook | None = getattr(self.app, "offset_book", None)
        if book is None:
            return await super().seek_to_committed()
        inputs = sorted(tp for tp in self.assignment() if tp.topic in book.topics)
        # The group's offsets only where nothing is owned yet, in one request (aiokafka asks one per partition).
        committed = await self._group_offsets([tp for tp in inputs if book.durable(tp) is None])
        starts = {tp: book.start(tp, committed.get(tp)) for tp in inputs}
        unknown = [tp for tp, position in starts.items() if position is None]
        if unknown:  # neither owned nor committed: the log start
            starts.update((await self.earliest_offsets(*unknown)).items())
        positions = {tp: int(starts[tp] or 0) for tp in inputs}
        await self._seek_all(positions)
        for tp, position in positions.items():
            self._rewinds().pop(tp, None)
            book.positioned(tp, position)
            committed[tp] = position
        log.info("input partitions positioned at their owned offsets: %s",
                 ", ".join(f"{tp.topic}[{tp.partition}]@{starts[tp]}" for tp in inputs))
        return committed

    async def group_offsets(self, tps: list[Any]) -> dict[Any, int]:
        """The group's committed offsets of these partitions (any partition, assigned or not), in one request."""
        return await self._group_offsets(tps)

    def coordination_failure(self) -> BaseException | None:
        """The error that ended aiokafka's group coordination, if it ended with one.

        The consumer then never joins or rebalances again, and faust does not notice: the worker sits idle with
        whatever it had. It happens, for one, when a static member restarted with another topic set gets the
        assignment of its previous run back ("Received an assignment for unsubscribed topic").
        """
        consumer = getattr(getattr(self, "_thread", None), "_consumer", None)
        task = getattr(getattr(consumer, "_coordinator", None), "_coordination_task", None)
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @Service.task
    async def _watch_coordination(self) -> None:
        """Exit (`EXIT_RESTART`) with the reason if the group coordination ended: the worker would hang. A task of
        the consumer's own, since faust starts its timers only after the first assignment."""
        while not self.should_stop:
            await self.sleep(1.0)
            failure = self.coordination_failure()
            if failure is None:
                continue
            hint = ""
            if "unsubscribed topic" in str(failure):
                conf = self.app.conf
                hint = (f" The group gave this static member ({conf.consumer_group_instance_id}) the assignment of "
                        f"its previous run, which read other topics (a changed configuration or version). Hint: "
                        f"start it again once {conf.broker_session_timeout:.0f} s (the session timeout) have passed "
                        f"since the previous process stopped, or give it another streams.instance_id.")
            log.critical("the worker's consumer group coordination failed: %s.%s Exiting (%d).", failure, hint,
                         EXIT_RESTART)
            os._exit(EXIT_RESTART)

    async def _group_offsets(self, tps: list[Any]) -> dict[Any, int]:
        if not tps:
            return {}
        thread: Any = self._thread
        coordinator = thread._ensure_consumer()._coordinator
        offsets = await thread.call_thread(coordinator.fetch_committed_offsets, tps)
        return {tp: offsets[tp].offset for tp in tps if tp in offsets and offsets[tp].offset >= 0}

    def _rewinds(self) -> dict[Any, int]:
        if not hasattr(self, "_rewind"):
            self._rewind = {}
        return self._rewind

    async def seek(self, partition: Any, offset: int) -> None:
        self._rewinds()[partition] = offset
        await super().seek(partition, offset)

    async def _seek(self, partition: Any, offset: int) -> None:
        await self._seek_all({partition: offset})

    async def _seek_all(self, positions: Mapping[Any, int]) -> None:
        """Seek in the consumer's own thread, all partitions in one call (each call waits for that thread).

        faust calls aiokafka's `seek` from the app's thread, racing aiokafka's fetcher in the consumer thread: a
        response for the old position, stored after the seek had cleared the partition's buffer, was delivered
        and moved the position past the offset sought, which then never came (a partition sought back stalled
        until the gap guard's deadline ended the worker).
        """
        thread: Any = self._thread
        consumer = thread._ensure_consumer()

        async def seek() -> None:
            for tp, offset in positions.items():
                consumer.seek(tp, offset)

        await thread.call_thread(seek)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        rewinds = self._rewinds()
        async for tp, message in super().getmany(timeout):
            target = rewinds.get(tp)
            if target is not None:
                if message.offset != target:
                    continue  # fetched before the seek back
                del rewinds[tp]
                self._read_offset[tp] = None
            yield tp, message

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        """Commit the owned offsets of input partitions; faust's `offsets` (what its streams acked) are ignored."""
        return await self.commit_owned()

    async def commit_owned(self) -> bool:
        book: OffsetBook | None = getattr(self.app, "offset_book", None)
        if book is None:
            return False
        offsets = book.committable(self.assignment())
        if not offsets:
            return False
        done = bool(await super()._commit(offsets))
        if done:
            book.committed(offsets)
        return done


def instance_id(app_id: str, configured: str | None, lock_dir: Path | None = None) -> tuple[str, Any]:
    """A group instance id (KIP-345 static membership) that a restarted worker gets back: the configured one, or
    `<app id>-<host>-<n>` with the lowest `n` whose lock file no running worker on this host holds.

    Returns the id and the open lock file (keep it open for the process's life: the kernel releases the lock
    when the process dies, even by SIGKILL, so the restarted worker takes the same `n`).
    """
    if configured:
        return configured, None
    directory = lock_dir or Path(tempfile.gettempdir()) / f"fleetstream-{app_id}"
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for index in range(1024):
        handle = (directory / f"worker-{index}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return f"{app_id}-{host}-{index}", handle
    raise RuntimeError(f"no free worker slot under {directory}")
