"""The faust-streaming worker: a thin shell that moves batches between Kafka and the pure stream logic.

Records arrive as raw bytes (our codec does the Avro, not faust's), are validated, and leave as
`<topic>.valid` or `dlq.<topic>`. Each batch's outputs are acknowledged by the broker, then its state is
written, then its input offsets, which the worker owns (`fleetstream.streams.offsets`): it resumes from them after any
crash or rebalance whatever faust's stream acked, and replays at most the batch in flight (outputs repeated
identically, state not applied twice). Downstream sinks are idempotent, which is the combination DESIGN.md
prescribes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from functools import partial
from typing import Any, cast

import faust
from faust.types import TP

from fleetstream.admin import min_insync_for, with_cluster_replication
from fleetstream.config import Settings
from fleetstream.health import PartHealth
from fleetstream.schemas.codec import Codec, DecodeError, serializer
from fleetstream.schemas.deadletter import dead_letter
from fleetstream.schemas.sample_batch import SAMPLE_BATCH_TYPES, SampleBatch
from fleetstream.streams.analytics import ACKS_TOPIC, AnalyticsConfig, Analyzer, settle
from fleetstream.streams.credentials import broker_credentials
from fleetstream.streams.offsets import (
    EXIT_RESTART,
    OFFSETS_TABLE,
    OffsetBook,
    OwnedOffsetsConsumer,
    instance_id,
    processed_to_end,
)
from fleetstream.streams.outputs import Output, deliver, fit
from fleetstream.streams.validation import Validator
from fleetstream.topics import dead_letter_topic, record_type_of, sample_count, valid_topic

__all__ = ["Output", "StreamStats", "create_app", "validate_message"]

log = logging.getLogger(__name__)


class StreamStats:
    """Counters a worker keeps for its logs and metrics, in samples as well as messages."""

    def __init__(self) -> None:
        self.messages = 0
        self.valid_samples = 0
        self.dead_letter_samples = 0
        self.warnings = 0
        self.dead_letters_by_code: Counter[str] = Counter()
        self.batch_seconds: list[float] = []
        """Durations of validation batches not yet handed to the metrics (`_follow_health` empties it)."""


def validate_message(
    validator: Validator,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    now_ms: int,
    stats: StreamStats | None = None,
    codec: Codec | None = None,
) -> list[Output]:
    """Everything one raw message turns into: at most one valid record and any number of dead letters.

    Signal and dyno batches are decoded straight into columns (`SampleBatch`) and the valid part is encoded
    from them. `codec` is the process's serializer (`fleetstream.schemas.codec.serializer`); by default
    single-object framing is written. Never raises: an undecodable message, and any unexpected error, becomes a
    dead letter with its reason.
    """
    stats = stats or StreamStats()
    codec = codec or Codec()
    stats.messages += 1
    letter = partial(dead_letter, source_topic=topic, partition=partition, offset=offset, key=key, now_ms=now_ms,
                     codec=codec)
    record_type = record_type_of(topic)
    try:
        record: dict[str, Any] | SampleBatch = (codec.decode_batch(value, record_type)
                                                if record_type in SAMPLE_BATCH_TYPES
                                                else codec.decode(value, record_type))
    except DecodeError as exc:
        stats.dead_letter_samples += 1
        stats.dead_letters_by_code["malformed"] += 1
        return [letter(original=value, stage="decode", error_code="malformed", reason=str(exc),
                            sample_count=1)]
    try:
        outcome = validator.validate(record_type, record, now_ms)
        outputs: list[Output] = []
        if outcome.valid is not None:
            out_topic = valid_topic(topic)
            outputs.append((out_topic, key, codec.encode_record(record_type, outcome.valid, out_topic)))
        for rejected in outcome.rejected:
            outputs.append(letter(original=codec.encode_record(record_type, rejected.record, topic),
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


def _safe_count(record_type: str, record: dict[str, Any] | SampleBatch) -> int:
    try:
        return sample_count(record_type, record)
    except Exception:
        return 1


def create_app(settings: Settings, group_instance_id: str | None = None,
               health: PartHealth | None = None) -> faust.App:
    """The worker app for these settings: one validation agent over every raw topic, one analytics agent over
    the validated ones, and the table of their owned input offsets (`fleetstream.streams.offsets`).

    `health` (served by `run_worker`) follows the app's assignments, table recovery and counters.

    `group_instance_id` makes the worker a static member of its consumer group (KIP-345): restarted with the
    same id, it takes its partitions back at once instead of waiting for its predecessor's session to expire.
    """
    brokers = [f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")]
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    session_timeout_s = settings.streams.session_timeout_s
    app = faust.App(
        settings.streams.app_id,
        broker=brokers,
        broker_credentials=broker_credentials(settings.kafka.client_config),  # SASL/TLS as the other parts
        datadir=str((settings.home / "faust").resolve()),
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_linger_ms=5,
        producer_max_request_size=1_000_000,  # streams.outputs.OUTPUT_LIMIT_BYTES keeps values under it
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=group_instance_id,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=max(0.5, min(3.0, session_timeout_s / 5)),
        topic_replication_factor=settings.topics.replication_factor or 1,  # run_worker fills it from the cluster
        web_enabled=False,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8192,
    )
    app.transport.Consumer = OwnedOffsetsConsumer  # type: ignore[misc]  # commits and seeks owned offsets
    raw_topics = settings.topics.raw
    valid_topics = [valid_topic(t) for t in raw_topics if t != "fleet.faults"]
    partitions = max(t.partitions for t in settings.topics.topics)
    offsets_table = app.Table(OFFSETS_TABLE, default=None, key_type=str, partitions=partitions)
    book = OffsetBook(offsets_table, [*raw_topics, *valid_topics, ACKS_TOPIC], settings.kafka.client())
    app.offset_book = book  # type: ignore[attr-defined]  # read by OwnedOffsetsConsumer
    app.on_partitions_revoked.connect(partial(_forget, book))
    source = app.topic(*raw_topics, key_serializer="raw", value_serializer="raw")
    sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
             for name in [valid_topic(t) for t in raw_topics] + [dead_letter_topic(t) for t in raw_topics]}
    validator = Validator(settings.validation)
    codec = serializer(settings.kafka.schema_registry_url)
    stats = StreamStats()
    app.stats = stats  # type: ignore[attr-defined]

    @app.agent(source)
    async def validate(stream: faust.StreamT[bytes]) -> None:
        # A batch's outputs are acknowledged by the broker before its offsets are written: faust's send only
        # queues, and a SIGKILL after the offsets were durable would otherwise lose the queued outputs.
        async for batch in cast("faust.Stream[bytes]", stream).take_events(VALIDATE_BATCH, 0.02):
            started = time.perf_counter()
            events = await book.admit(app, batch)
            now_ms = int(time.time() * 1000)
            outputs: list[Output] = []
            for event in events:
                message = event.message
                outputs += _fitted(codec, message, now_ms, validate_message(
                    validator, message.topic, message.partition, message.offset, message.key,
                    message.value or b"", now_ms, stats, codec))
            await deliver(sinks, outputs)
            await book.persist(events)
            stats.batch_seconds.append(time.perf_counter() - started)

    _add_analytics(app, settings, sinks, book, valid_topics, codec)

    @app.timer(interval=1.0)
    async def commit_owned() -> None:
        """Tell the group the owned offsets (faust's own commit runs only when its streams acked something)."""
        book.check_rewinds()
        await book.retry_rewinds(app)
        if not app.rebalancing:
            await cast(OwnedOffsetsConsumer, app.consumer).commit_owned()

    @app.timer(interval=5.0)
    async def watch_progress() -> None:
        """Never sit silent: a positioned input partition with records waiting that does not move ends the worker
        (the supervisor restarts it, and it resumes from its owned offsets)."""
        await _exit_if_stalled(app, book)

    if health is not None:
        _follow_health(app, health, stats)

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("validated %d messages: %d valid samples, %d dead-lettered (%s), %d warnings",
                 stats.messages, stats.valid_samples, stats.dead_letter_samples,
                 dict(stats.dead_letters_by_code), stats.warnings)

    return app


def _follow_health(app: faust.App, health: PartHealth, stats: StreamStats) -> None:
    """Assignments and table recovery into the worker's readiness; its counters into the metrics once a second."""

    def assigned(sender: Any, /, assigned: Any = (), *_: Any, signal: Any = None, **__: Any) -> None:
        health.assigned(len(assigned))

    def revoked(sender: Any, /, *_: Any, signal: Any = None, **__: Any) -> None:
        health.revoked()

    def tables() -> str:
        if getattr(app, "in_recovery", False):
            raise RuntimeError("recovering state tables from their changelogs")
        return ""

    def lag() -> dict[tuple[str, int], int]:
        """Input partitions: the end offset the fetcher last saw minus the next offset the agents expect."""
        book: OffsetBook = app.offset_book  # type: ignore[attr-defined]
        consumer: Any = app.consumer
        found = {}
        for tp in list(consumer.assignment()):
            expected, high = book.expected.get(tp), consumer.highwater(tp)
            if tp.topic in book.topics and expected is not None and high is not None:
                found[(tp.topic, tp.partition)] = max(0, high - expected)
        return found

    app.on_partitions_assigned.connect(assigned)
    app.on_partitions_revoked.connect(revoked)
    health.store, health.lag = tables, lag
    counted = StreamStats()

    @app.timer(interval=1.0)
    async def export_counters() -> None:
        dead = stats.dead_letters_by_code - counted.dead_letters_by_code
        samples = stats.valid_samples + stats.dead_letter_samples - counted.valid_samples
        health.metrics.count(messages=stats.messages - counted.messages, samples=samples, dead_letters=dead)
        durations, stats.batch_seconds = stats.batch_seconds, []
        for seconds in durations:
            health.metrics.batch_seconds.labels(health.part).observe(seconds)
        counted.messages, counted.valid_samples = stats.messages, stats.valid_samples + stats.dead_letter_samples
        counted.dead_letters_by_code = Counter(stats.dead_letters_by_code)
async def _exit_if_stalled(app: faust.App, book: OffsetBook) -> None:
    if app.rebalancing or getattr(app, "in_recovery", False) or app.consumer is None:
        book.reset_progress()
        return
    consumer: Any = app.consumer
    inputs = [tp for tp in consumer.assignment() if tp.topic in book.topics]
    if not inputs:
        return
    try:
        highwaters = await consumer.highwaters(*inputs)
    except Exception as exc:  # a broker hiccup: judge next time
        log.debug("progress not checked: end offsets unknown (%s)", exc)
        return
    now = time.monotonic()
    stalled = book.stalled(highwaters, now)
    again = book.to_seek_again(stalled, now)
    for tp in again:
        log.warning("%s[%d] positioned at %s but nothing arrived for %.0f s with records waiting (end %d); seeking "
                    "it again", tp.topic, tp.partition, book.expected.get(tp), book.STALL_S, highwaters[tp])
        await consumer.seek(tp, book.expected[tp])
    stalled = [tp for tp in stalled if tp not in again]
    if stalled:
        log.critical("input partitions positioned but not moving for %.0f s with records waiting: %s (paused: %s); "
                     "exiting (%d) so that the restarted worker resumes from its owned offsets", book.STALL_S,
                     ", ".join(f"{tp.topic}[{tp.partition}] at {book.expected.get(tp)} of {highwaters[tp]}"
                               for tp in stalled),
                     sorted(f"{tp.topic}[{tp.partition}]" for tp in consumer._paused_partitions if tp in stalled),
                     EXIT_RESTART)
        os._exit(EXIT_RESTART)


def _forget(book: OffsetBook, sender: Any, /, *revoked: Any, signal: Any = None, **_: Any) -> None:
    """faust's `on_partitions_revoked` signal: the book forgets partitions another worker may now move on."""
    book.forget(set().union(*revoked))


def _fitted(codec: Codec, message: Any, now_ms: int, outputs: list[Output]) -> list[Output]:
    """One input's outputs made to fit the producer's limit (`fleetstream.streams.outputs.fit`); if they cannot be (a
    single sample too large), the input becomes a dead letter instead, never a send that fails."""
    try:
        return fit(outputs, codec=codec)
    except ValueError as exc:
        letter = dead_letter(source_topic=message.topic, partition=message.partition, offset=message.offset,
                             key=message.key, original=message.value or b"", stage="validate",
                             error_code="too_large", reason=str(exc),
                             sample_count=sum(_letter_count(codec, o) for o in outputs), now_ms=now_ms, codec=codec)
        return fit([letter], codec=codec)


def _letter_count(codec: Codec, output: Output) -> int:
    topic, _, value = output
    return sample_count(record_type_of(topic), codec.decode(value, record_type_of(topic)))


def _add_analytics(app: faust.App, settings: Settings, sinks: dict[str, faust.TopicT], book: OffsetBook,
                   valid_topics: list[str], codec: Codec) -> None:
    """The analytics agent (dedup, windows, alerts, KPIs) over the validated topics, with its state tables.

    The idle flush visits only keys of partitions whose every input partition is processed to its end
    (`_ready_partitions`): a key's backlog may wait in its raw partition while its state is idle.
    """
    config = AnalyticsConfig.from_settings(settings.streams)
    analyzer = Analyzer(config, codec)
    partitions = {t.partitions for t in settings.topics.topics}
    # No value_type: faust would rebuild every recovered changelog value with `value_type.from_data`, which a
    # plain dict lacks, so recovery failed on each record and never finished. Untyped JSON values come back
    # as the plain dicts they were.
    table_options: dict[str, Any] = {"default": None, "key_type": str, "partitions": max(partitions)}
    channels = app.Table(ANALYTICS_TABLES[0], **table_options)
    keys = app.Table(ANALYTICS_TABLES[1], **table_options)
    # acknowledgements join the validated topics: keyed by vehicle, so they reach the key's state (time to ack)
    input_topics = [*settings.topics.raw, *valid_topics, ACKS_TOPIC]
    source = app.topic(*valid_topics, ACKS_TOPIC, key_serializer="raw", value_serializer="raw")
    for name in ("telemetry.windows", "analytics.threshold.exceeded", "alert.created", "analytics.kpi",
                 *[dead_letter_topic(t) for t in valid_topics]):
        sinks.setdefault(name, app.topic(name, key_serializer="raw", value_serializer="raw"))

    # The agent and the idle-flush timer each read state, emit, then write state: they must not interleave.
    lock = asyncio.Lock()
    # Wall time since which this worker has owned its tables and read its partitions: idleness counts from it.
    active_since_s: list[float] = []

    @app.agent(source)
    async def analyze(stream: faust.StreamT[bytes]) -> None:
        active_since_s[:] = [time.time()]
        async for batch in cast("faust.Stream[bytes]", stream).take_events(ANALYTICS_BATCH, 0.02):
            events = await book.admit(app, batch)
            async with lock:
                outputs, staged_channels, staged_keys = _analyze_events(analyzer, events, channels.data, keys.data)
                # Output first, state second, offsets last: a crash in between replays the batch, and each state
                # skips what it has applied (`applied_offsets`), so the replay emits the same records again
                # (identical) and counts nothing twice. Key states before channel states: a channel state that
                # has a message applied implies its key state has it too.
                await deliver(sinks, fit(outputs, codec=codec))
                await _persist(keys, staged_keys.changes)
                await _persist(channels, staged_channels.changes)
                await book.persist(events)

    @app.timer(interval=max(1.0, settings.streams.idle_flush_s / 3))
    async def flush_idle() -> None:
        if not active_since_s or app.rebalancing or getattr(app, "in_recovery", False):
            # Tables being recovered or reassigned: nothing is idle yet.
            active_since_s[:] = [time.time()]
            return
        ready = await _ready_partitions(app, book, input_topics, valid_topics, max(partitions))
        async with lock:
            outputs, updates = analyzer.flush_idle(channels.data, keys.data, int(time.time() * 1000), time.time(),
                                                   active_since_s=active_since_s[0], ready=ready.__contains__)
            await deliver(sinks, fit(outputs, codec=codec))
            await _persist(keys, {state_key: state for store, state_key, state in updates if store is keys.data})
            await _persist(channels, {state_key: state for store, state_key, state in updates
                                      if store is channels.data})


async def _ready_partitions(app: faust.App, book: OffsetBook, topics: list[str], state_topics: list[str],
                            partitions: int) -> set[int]:
    """Partition numbers whose keys the idle flush may close: this worker owns the number in every topic its state
    comes from (`state_topics`), and every input topic's partition of that number is processed to its end.

    Processed means durable, never merely admitted: a raw batch admitted but not yet delivered would have
    its `.valid` records missing from the end offsets, and the flush would close their windows early. This
    worker's partitions are judged by its durable offsets, the others by the group's committed offsets (which
    follow their owner's durable offsets): faust may give raw[n] and `.valid[n]` to different workers. Progress
    is read before the end offsets (asked of the broker now; the fetcher's are stale): a raw record processed
    by then has its outputs in `.valid` before `.valid`'s end is read.
    """
    consumer: Any = app.consumer
    assignment = consumer.assignment()
    numbers = {n for n in range(partitions) if all(TP(t, n) in assignment for t in state_topics)}
    if not numbers:
        return set()
    tps = [TP(t, n) for t in topics for n in sorted(numbers)]
    progress = {tp: book.durable(tp) for tp in tps if tp in assignment}
    try:
        progress.update(await consumer.group_offsets([tp for tp in tps if progress.get(tp) is None]))
        highwaters = await consumer.highwaters(*tps)
    except Exception as exc:  # a broker hiccup: flush nothing this time
        log.warning("idle flush skipped: the input partitions' offsets are unknown (%s)", exc)
        return set()
    return {n for n in numbers
            if all(processed_to_end(progress.get(TP(t, n)), highwaters.get(TP(t, n))) for t in topics)}


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
            record = analyzer.decode(message.topic, message.value)
        except DecodeError as exc:
            outputs.append(_analytics_letter(analyzer.codec, message, now_ms, error_code="malformed", reason=str(exc)))
            continue
        outputs += analyzer.process(message.topic, message.partition, message.offset, message.key, record, now_ms,
                                    time.time(), channels, keys, live=True)
    settle(channels.changes)
    settle(keys.changes)
    return outputs


def _analytics_letter(codec: Codec, message: Any, now_ms: int, error_code: str, reason: str) -> Output:
    """The dead letter of a validated message the analytics stage could not handle (counted as one sample)."""
    return dead_letter(source_topic=message.topic, partition=message.partition, offset=message.offset,
                       key=message.key, original=message.value, stage="analytics", sample_count=1, now_ms=now_ms,
                       error_code=error_code, reason=reason, codec=codec)


def _analyze_one(analyzer: Analyzer, message: Any, channels: _Staged, keys: _Staged) -> list[Output]:
    """One validated message through the analyzer; its state changes join the batch's only if it succeeded."""
    now_ms = int(time.time() * 1000)
    letter = partial(_analytics_letter, analyzer.codec, message, now_ms)
    own_channels, own_keys = _Staged(channels), _Staged(keys)
    try:
        record = analyzer.decode(message.topic, message.value)
        outputs = analyzer.process(message.topic, message.partition, message.offset, message.key, record, now_ms,
                                   time.time(), own_channels, own_keys)
    except DecodeError as exc:
        return [letter(error_code="malformed", reason=str(exc))]
    except Exception as exc:  # a bug or an unforeseen record must not stop the agent
        log.exception("analytics failed for %s[%d]@%d", message.topic, message.partition, message.offset)
        return [letter(error_code="internal_error", reason=f"{type(exc).__name__}: {exc}")]
    channels.changes.update(own_channels.changes)
    keys.changes.update(own_keys.changes)
    return outputs


async def _persist(table: Any, changes: Mapping[str, dict[str, Any]]) -> None:
    """Write states to a table and its changelog, and wait until the broker has the changelog records.

    Each state remembers its partition (the source's). Waiting matters: the batch's offsets are written next,
    and a SIGKILL must never leave them durable past state that never reached the changelog.
    """
    pending = []
    for key, state in changes.items():
        table.data[key] = state
        pending.append(table.send_changelog(state["_partition"], key, state))
    if pending:
        await asyncio.gather(*pending)


ANALYTICS_TABLES = ("analytics-channels", "analytics-keys")


CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    # A restarted worker reads its changelogs from their start before it processes anything, and every batch
    # rewrites its keys' whole states: left to the defaults (1 GB segments, compacted only once closed) they
    # grow by GBs an hour, and the restart with them (49 s after 20 minutes of 5,000 samples/s). Small segments,
    # rolled at least every minute, and a low dirty ratio let the log cleaner keep them near one value per key.
    "segment.bytes": str(16 * 1024 * 1024),
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
    "min.compaction.lag.ms": "0",
}
"""Topic configuration of the tables' changelogs, set on creation and on every worker start."""


def ensure_changelog_topics(settings: Settings) -> None:
    """Create the tables' changelog topics (compacted, partitioned like the source topics), and give existing
    ones `CHANGELOG_CONFIG` (changelogs created by an earlier version kept the broker's defaults).

    faust would create them on first use, but a worker that starts on a fresh broker can then see them with
    no partitions yet and refuse to write its tables (PartitionsMismatch); creating them first avoids that.
    """
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    from fleetstream.admin import ensure_topics

    factor = settings.topics.replication_factor or 1
    names = [f"{settings.streams.app_id}-{table}-changelog" for table in (*ANALYTICS_TABLES, OFFSETS_TABLE)]
    config = {**CHANGELOG_CONFIG, "min.insync.replicas": str(min_insync_for(factor))}
    created = ensure_topics(settings.kafka.bootstrap_servers, names,
                            partitions=max(t.partitions for t in settings.topics.topics),
                            replication_factor=factor, config=config, client_config=settings.kafka.client_config)
    existing = [name for name in names if name not in created]
    if not existing:
        return
    admin = AdminClient(settings.kafka.client())
    entries = [ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
               for key, value in config.items()]
    resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries) for name in existing]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Run the worker in this process until SIGTERM or SIGINT (how `fleetstream worker` and the demo start it)."""
    settings = with_cluster_replication(settings)  # changelogs replicated like the topics they follow
    ensure_changelog_topics(settings)
    member, _slot = instance_id(settings.streams.app_id, settings.streams.instance_id)  # _slot: held until exit
    log.info("worker %s joins group %s as static member %s", os.getpid(), settings.streams.app_id, member)
    health = PartHealth("worker", settings.kafka, settings.health, settings.health.worker, home=settings.home,
                        group=settings.streams.app_id)
    app = create_app(settings, group_instance_id=member, health=health)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    health.start()
    try:
        worker.execute_from_commandline()
    finally:
        health.stop()
