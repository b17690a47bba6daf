"""The faust-streaming worker: a thin shell that moves batches between Kafka and the pure stream logic.

Records arrive as raw bytes (our codec does the Avro, not faust's), are validated, and leave as
`<topic>.valid` or `dlq.<topic>`. Processing is at-least-once (faust commits after the agent has handled
an event, and `Progress` seeks back where its stream skipped one); downstream sinks are idempotent, which is
the combination DESIGN.md prescribes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from functools import partial
from typing import Any, cast

import faust

from fleetstream.config import Settings
from schemas import codec
from schemas.deadletter import dead_letter
from schemas.topics import record_type_of, valid_topic
from streams.analytics import AnalyticsConfig, Analyzer, settle
from streams.validation import Validator

__all__ = ["Output", "StreamStats", "create_app", "validate_message"]

log = logging.getLogger(__name__)

Output = tuple[str, bytes | None, bytes]


class StreamStats:
    """Counters a worker keeps for its logs and metrics, in samples as well as messages."""

    def __init__(self) -> None:
        self.messages = 0
        self.valid_samples = 0
        self.dead_letter_samples = 0
        self.warnings = 0
        self.dead_letters_by_code: Counter[str] = Counter()


def validate_message(
    validator: Validator,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    now_ms: int,
    stats: StreamStats | None = None,
) -> list[Output]:
    """Everything one raw message turns into: at most one valid record and any number of dead letters.

    Never raises: an undecodable message, and any unexpected error, becomes a dead letter with its reason.
    """
    stats = stats or StreamStats()
    stats.messages += 1
    letter = partial(dead_letter, source_topic=topic, partition=partition, offset=offset, key=key, now_ms=now_ms)
    record_type = record_type_of(topic)
    try:
        record = codec.decode(value, record_type)
    except codec.DecodeError as exc:
        stats.dead_letter_samples += 1
        stats.dead_letters_by_code["malformed"] += 1
        return [letter(original=value, stage="decode", error_code="malformed", reason=str(exc),
                            sample_count=1)]
    try:
        outcome = validator.validate(record_type, record, now_ms)
        outputs: list[Output] = []
        if outcome.valid is not None:
            outputs.append((valid_topic(topic), key, codec.encode(record_type, outcome.valid)))
        for rejected in outcome.rejected:
            outputs.append(letter(original=codec.encode(record_type, rejected.record),
                                       stage="validate", error_code=rejected.error_code, reason=rejected.reason,
                                       sample_count=rejected.sample_count))
            stats.dead_letters_by_code[rejected.error_code] += 1
            stats.dead_letter_samples += rejected.sample_count
        stats.valid_samples += outcome.valid_samples
        stats.warnings += outcome.warnings
        return outputs
    except Exception as exc:  # a bug or an unforeseen record must not stop the agent
        log.exception("validation failed for %s[%d]@%d", topic, partition, offset)
        count = _safe_count(record_type, record)
        stats.dead_letter_samples += count
        stats.dead_letters_by_code["internal_error"] += 1
        return [letter(original=value, stage="validate", error_code="internal_error",
                            reason=f"{type(exc).__name__}: {exc}", sample_count=count)]


def _safe_count(record_type: str, record: dict[str, Any]) -> int:
    from schemas.topics import sample_count

    try:
        return sample_count(record_type, record)
    except Exception:
        return 1


def create_app(settings: Settings) -> faust.App:
    """The worker app for these settings: one validation agent over every raw topic."""
    brokers = [f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")]
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.streams.app_id,
        broker=brokers,
        broker_credentials=None,
        datadir=str((settings.home / "faust").resolve()),
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_linger_ms=5,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=settings.topics.replication_factor,
        web_enabled=False,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8192,
    )
    raw_topics = settings.topics.raw
    source = app.topic(*raw_topics, key_serializer="raw", value_serializer="raw")
    sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
             for name in [valid_topic(t) for t in raw_topics] + [f"dlq.{t}" for t in raw_topics]}
    validator = Validator(settings.validation)
    stats = StreamStats()
    app.stats = stats  # type: ignore[attr-defined]

    @app.agent(source)
    async def validate(stream: faust.StreamT[bytes]) -> None:
        # A batch's outputs are acknowledged by the broker before its events are acked (and so committable):
        # faust's send only queues, and a SIGKILL after a commit would otherwise lose the queued outputs.
        async for batch in cast("faust.Stream[bytes]", stream).take_events(VALIDATE_BATCH, 0.02):
            events = await progress.admit(app, batch)
            now_ms = int(time.time() * 1000)
            outputs: list[Output] = []
            for event in events:
                message = event.message
                outputs += validate_message(validator, message.topic, message.partition, message.offset,
                                            message.key, message.value or b"", now_ms, stats)
            await _deliver(sinks, outputs)
            progress.done(events)

    progress = Progress()
    app.on_partitions_revoked.connect(progress.on_revoked)  # another worker may process them meanwhile
    _add_analytics(app, settings, sinks, progress)

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("validated %d messages: %d valid samples, %d dead-lettered (%s), %d warnings",
                 stats.messages, stats.valid_samples, stats.dead_letter_samples,
                 dict(stats.dead_letters_by_code), stats.warnings)

    return app


def _add_analytics(app: faust.App, settings: Settings, sinks: dict[str, faust.TopicT], progress: Progress
                   ) -> None:
    """The analytics agent (dedup, windows, alerts, KPIs) over the validated topics, with its state tables.

    `progress` is the next offset to process per input partition, kept by both agents: the idle flush waits
    until every input partition is read to its end, so a worker catching up on a backlog never takes a key
    whose records are still queued for idle.
    """
    config = AnalyticsConfig.from_settings(settings.streams)
    analyzer = Analyzer(config)
    partitions = {t.partitions for t in settings.topics.topics}
    # No value_type: faust would rebuild every recovered changelog value with `value_type.from_data`, which a
    # plain dict lacks, so recovery failed on each record and never finished. Untyped JSON values come back
    # as the plain dicts they were.
    table_options: dict[str, Any] = {"default": None, "key_type": str, "partitions": max(partitions)}
    channels = app.Table(ANALYTICS_TABLES[0], **table_options)
    keys = app.Table(ANALYTICS_TABLES[1], **table_options)
    valid_topics = [valid_topic(t) for t in settings.topics.raw if t != "fleet.faults"]
    input_topics = {*settings.topics.raw, *valid_topics}
    source = app.topic(*valid_topics, key_serializer="raw", value_serializer="raw")
    for name in ("telemetry.windows", "analytics.threshold.exceeded", "alert.created", "analytics.kpi",
                 *[f"dlq.{t}" for t in valid_topics]):
        sinks.setdefault(name, app.topic(name, key_serializer="raw", value_serializer="raw"))

    # The agent and the idle-flush timer each read state, emit, then write state: they must not interleave.
    lock = asyncio.Lock()
    # Wall time since which this worker has owned its tables and read its partitions: idleness counts from it.
    active_since_s: list[float] = []

    @app.agent(source)
    async def analyze(stream: faust.StreamT[bytes]) -> None:
        active_since_s[:] = [time.time()]
        async for batch in cast("faust.Stream[bytes]", stream).take_events(ANALYTICS_BATCH, 0.02):
            events = await progress.admit(app, batch)
            async with lock:
                outputs, staged_channels, staged_keys = _analyze_events(analyzer, events, channels.data, keys.data)
                # Output first, state second: a crash in between replays the batch from the old state and emits
                # the same records again (at-least-once, identical), where the other order would lose them (the
                # replayed samples would be duplicates of the saved state, and emit nothing).
                await _deliver(sinks, outputs)
                await _persist((channels, staged_channels.changes), (keys, staged_keys.changes))
                progress.done(events)

    @app.timer(interval=max(1.0, settings.streams.idle_flush_s / 3))
    async def flush_idle() -> None:
        if not active_since_s or app.rebalancing or getattr(app, "in_recovery", False) or \
                _behind(app, input_topics, progress):
            # Tables being recovered or reassigned, or input not read to its end yet: nothing is idle yet.
            active_since_s[:] = [time.time()]
            return
        async with lock:
            outputs, updates = analyzer.flush_idle(channels.data, keys.data, int(time.time() * 1000), time.time(),
                                                   active_since_s=active_since_s[0])
            await _deliver(sinks, outputs)
            await _persist(*[(channels if store is channels.data else keys, {state_key: state})
                             for store, state_key, state in updates])


def _behind(app: faust.App, topics: set[str], progress: Progress) -> bool:
    """Whether an assigned input partition has records this worker has not processed (or its end is unknown)."""
    consumer: Any = app.consumer
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        highwater = consumer.highwater(tp)
        if highwater is None:
            return True
        # Nothing processed here since the assignment: where the consumer was positioned (0 reads as None).
        done = progress.next.get(tp, consumer._read_offset.get(tp) or 0)
        if done < highwater:
            return True
    return False


class Progress:
    """The next offset to process per input partition, and the guard that keeps each partition gap-free.

    faust acks (and so commits) a message its stream iterator skips, e.g. one fetched while flow control was
    suspended for a rebalance or a table recovery, and when its seek back to the committed offset comes too
    late, the message is never delivered: a worker restarted after SIGKILL lost whole input messages that way.
    Our input offsets are contiguous (no transactions, no compaction), so an event past the next expected
    offset means messages were skipped: the agent drops the partition's events from there, seeks back to the
    first missing offset and processes them when they come again. Events below it were fully handled by this
    process (outputs acknowledged, state written) and are dropped too, instead of being sent again.
    """

    RESEEK_AFTER_S = 2.0

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}
        self._rewinding: dict[Any, float] = {}  # partition -> when we last sought back

    async def admit(self, app: faust.App, events: Sequence[Any]) -> list[Any]:
        """The events of this batch to process, in order; seeks back where faust skipped messages."""
        expected = dict(self.next)
        admitted, gaps = [], {}
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            want = expected.get(tp)
            if tp in gaps or (want is not None and offset < want):
                continue
            if want is None or offset == want:
                admitted.append(event)
                expected[tp] = offset + 1
                self._rewinding.pop(tp, None)
            else:
                gaps[tp] = (want, offset)
        for tp, (want, offset) in gaps.items():
            if time.monotonic() - self._rewinding.get(tp, -self.RESEEK_AFTER_S) < self.RESEEK_AFTER_S:
                continue  # already sought back: these are prefetched messages from beyond the gap
            await self._seek_back(app, tp, want, offset)
        return admitted

    async def _seek_back(self, app: faust.App, tp: Any, want: int, offset: int) -> None:
        """Seek to the first missing offset, or, when retention has deleted it (a worker more than the topic's
        retention behind), to the log start: seeking to a deleted offset would only reset past it again."""
        earliest = (await app.consumer.earliest_offsets(tp)).get(tp, 0)
        if want < earliest:
            log.error("%s: offsets %d..%d were deleted by retention before this worker processed them; "
                      "continuing at %d", tp, want, earliest - 1, earliest)
            self.next[tp] = want = earliest
        else:
            log.warning("%s: offsets %d..%d were skipped by the stream; seeking back to %d", tp, want, offset - 1,
                        want)
        self._rewinding[tp] = time.monotonic()
        await app.consumer.seek(tp, want)

    def done(self, events: Sequence[Any]) -> None:
        """These events' outputs are acknowledged and their state written: never process them again."""
        for event in events:
            self.next[event.message.tp] = event.message.offset + 1

    def on_revoked(self, sender: Any, /, *revoked: Any, signal: Any = None, **_: Any) -> None:
        """Partitions this worker no longer owns (faust's signal): when they come back, another worker may
        have moved them on."""
        for tp in set().union(*revoked):
            self.next.pop(tp, None)
            self._rewinding.pop(tp, None)


VALIDATE_BATCH = 1000
"""Raw messages the validation agent takes at a time: one delivery wait per batch, not per message."""

ANALYTICS_BATCH = 500
"""Validated messages the analytics agent takes at a time: one delivery wait and one state write per batch."""


class _Staged(MutableMapping[str, Any]):
    """Writes held aside over a read-only base: a batch's analytics state until its output is delivered."""

    def __init__(self, base: Mapping[str, Any]):
        self.base = base
        self.changes: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key]
        return self.base[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError("analytics state is never deleted")

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self.base), **self.changes})

    def __len__(self) -> int:
        return len({**dict.fromkeys(self.base), **self.changes})


def _analyze_events(analyzer: Analyzer, events: Sequence[Any], channels: MutableMapping[str, Any],
                    keys: MutableMapping[str, Any]) -> tuple[list[Output], _Staged, _Staged]:
    """A batch's outputs and state changes (staged over the stores, which stay untouched).

    The batch runs as one (`_analyze_batch`); if a stage raises, which leaves the batch's live stages
    half-updated, it runs again message by message from the stores, so only the culprit is dead-lettered.
    """
    staged_channels, staged_keys = _Staged(channels), _Staged(keys)
    try:
        return _analyze_batch(analyzer, events, staged_channels, staged_keys), staged_channels, staged_keys
    except Exception:
        log.exception("analytics failed on a batch; processing it one message at a time")
    staged_channels, staged_keys = _Staged(channels), _Staged(keys)
    outputs: list[Output] = []
    for event in events:
        outputs += _analyze_one(analyzer, event.message, staged_channels, staged_keys)
    return outputs, staged_channels, staged_keys


def _analyze_batch(analyzer: Analyzer, events: Sequence[Any], channels: _Staged, keys: _Staged) -> list[Output]:
    """A batch with each stage decoded once and encoded once (`Live`); raises if a stage fails."""
    outputs: list[Output] = []
    for event in events:
        message = event.message
        now_ms = int(time.time() * 1000)
        try:
            record = codec.decode(message.value, record_type_of(message.topic))
        except codec.DecodeError as exc:
            outputs.append(_analytics_letter(message, now_ms, error_code="malformed", reason=str(exc)))
            continue
        outputs += analyzer.process(message.topic, message.partition, message.offset, message.key, record, now_ms,
                                    time.time(), channels, keys, live=True)
    settle(channels.changes)
    settle(keys.changes)
    return outputs


def _analytics_letter(message: Any, now_ms: int, error_code: str, reason: str) -> Output:
    """The dead letter of a validated message the analytics stage could not handle (counted as one sample)."""
    return dead_letter(source_topic=message.topic, partition=message.partition, offset=message.offset,
                       key=message.key, original=message.value, stage="analytics", sample_count=1, now_ms=now_ms,
                       error_code=error_code, reason=reason)


def _analyze_one(analyzer: Analyzer, message: Any, channels: _Staged, keys: _Staged) -> list[Output]:
    """One validated message through the analyzer; its state changes join the batch's only if it succeeded."""
    now_ms = int(time.time() * 1000)
    letter = partial(_analytics_letter, message, now_ms)
    own_channels, own_keys = _Staged(channels), _Staged(keys)
    try:
        record = codec.decode(message.value, record_type_of(message.topic))
        outputs = analyzer.process(message.topic, message.partition, message.offset, message.key, record, now_ms,
                                   time.time(), own_channels, own_keys)
    except codec.DecodeError as exc:
        return [letter(error_code="malformed", reason=str(exc))]
    except Exception as exc:  # a bug or an unforeseen record must not stop the agent
        log.exception("analytics failed for %s[%d]@%d", message.topic, message.partition, message.offset)
        return [letter(error_code="internal_error", reason=f"{type(exc).__name__}: {exc}")]
    channels.changes.update(own_channels.changes)
    keys.changes.update(own_keys.changes)
    return outputs


async def _deliver(sinks: dict[str, faust.TopicT], outputs: list[Output]) -> None:
    """Send and wait until the broker has acknowledged every record (raises if one cannot be delivered)."""
    pending = [await sinks[topic].send(key=key, value=value) for topic, key, value in outputs]
    if pending:
        await asyncio.gather(*pending)


async def _persist(*tables_and_changes: tuple[Any, Mapping[str, dict[str, Any]]]) -> None:
    """Write states to tables and their changelogs, and wait until the broker has the changelog records.

    Each state remembers its partition (the source's). Waiting matters: the batch's offsets may be committed
    as soon as the agent moves on, and faust's producer flush before a commit can return with changelog
    records still in its buffer (it gives up after 0.1 s without progress), so a SIGKILL could leave
    offsets committed past state that never reached the changelog: those records were then skipped.
    """
    pending = []
    for table, changes in tables_and_changes:
        for key, state in changes.items():
            table.data[key] = state
            pending.append(table.send_changelog(state["_partition"], key, state))
    if pending:
        await asyncio.gather(*pending)


ANALYTICS_TABLES = ("analytics-channels", "analytics-keys")


def ensure_changelog_topics(settings: Settings) -> None:
    """Create the analytics tables' changelog topics (compacted, partitioned like the source topics).

    faust would create them on first use, but a worker that starts on a fresh broker can then see them with
    no partitions yet and refuse to write its tables (PartitionsMismatch); creating them first avoids that.
    """
    from fleetstream.stack import ensure_topics

    ensure_topics(settings.kafka.bootstrap_servers,
                  [f"{settings.streams.app_id}-{table}-changelog" for table in ANALYTICS_TABLES],
                  partitions=max(t.partitions for t in settings.topics.topics),
                  replication_factor=settings.topics.replication_factor,
                  config={"cleanup.policy": "compact"}, client_config=settings.kafka.client_config)


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Run the worker in this process until SIGTERM or SIGINT (how `fleetstream worker` and the demo start it)."""
    ensure_changelog_topics(settings)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
