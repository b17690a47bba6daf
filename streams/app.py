"""The faust-streaming worker: a thin shell that moves batches between Kafka and the pure stream logic.

Records arrive as raw bytes (our codec does the Avro, not faust's), are validated, and leave as
`<topic>.valid` or `dlq.<topic>`. Processing is at-least-once (faust commits after the agent has handled
an event); downstream sinks are idempotent, which is the combination DESIGN.md prescribes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from functools import partial
from typing import Any

import faust

from fleetstream.config import Settings
from schemas import codec
from schemas.deadletter import dead_letter
from schemas.topics import record_type_of, valid_topic
from streams.analytics import AnalyticsConfig, Analyzer
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
        async for event in stream.events():
            message = event.message
            outputs = validate_message(validator, message.topic, message.partition, message.offset, message.key,
                                       message.value, int(time.time() * 1000), stats)
            for topic, key, value in outputs:
                await sinks[topic].send(key=key, value=value)

    _add_analytics(app, settings, sinks)

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("validated %d messages: %d valid samples, %d dead-lettered (%s), %d warnings",
                 stats.messages, stats.valid_samples, stats.dead_letter_samples,
                 dict(stats.dead_letters_by_code), stats.warnings)

    return app


def _add_analytics(app: faust.App, settings: Settings, sinks: dict[str, faust.TopicT]) -> None:
    """The analytics agent (dedup, windows, alerts, KPIs) over the validated topics, with its state tables."""
    config = AnalyticsConfig.from_settings(settings.streams)
    analyzer = Analyzer(config)
    partitions = {t.partitions for t in settings.topics.topics}
    table_options: dict[str, Any] = {"default": None, "key_type": str, "value_type": dict,
                                     "partitions": max(partitions)}
    channels = app.Table("analytics-channels", **table_options)
    keys = app.Table("analytics-keys", **table_options)
    valid_topics = [valid_topic(t) for t in settings.topics.raw if t != "fleet.faults"]
    source = app.topic(*valid_topics, key_serializer="raw", value_serializer="raw")
    for name in ("telemetry.windows", "analytics.threshold.exceeded", "alert.created", "analytics.kpi",
                 *[f"dlq.{t}" for t in valid_topics]):
        sinks.setdefault(name, app.topic(name, key_serializer="raw", value_serializer="raw"))

    @app.agent(source)
    async def analyze(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            now_ms = int(time.time() * 1000)
            letter = partial(dead_letter, source_topic=message.topic, partition=message.partition,
                             offset=message.offset, key=message.key, original=message.value, stage="analytics",
                             sample_count=1, now_ms=now_ms)
            try:
                record = codec.decode(message.value, record_type_of(message.topic))
                outputs = analyzer.process(message.topic, message.partition, message.offset, message.key, record,
                                           now_ms, time.time(), channels, keys)
            except codec.DecodeError as exc:
                outputs = [letter(error_code="malformed", reason=str(exc))]
            except Exception as exc:  # a bug or an unforeseen record must not stop the agent
                log.exception("analytics failed for %s[%d]@%d", message.topic, message.partition, message.offset)
                outputs = [letter(error_code="internal_error", reason=f"{type(exc).__name__}: {exc}")]
            for topic, key, value in outputs:
                await sinks[topic].send(key=key, value=value)

    @app.timer(interval=max(1.0, settings.streams.idle_flush_s / 3))
    async def flush_idle() -> None:
        outputs, updates = analyzer.flush_idle(channels.data, keys.data, int(time.time() * 1000), time.time())
        for store, state_key, state in updates:
            # Outside stream processing faust cannot tell a key's partition; the state remembers it.
            table = channels if store is channels.data else keys
            store[state_key] = state
            table.send_changelog(state["_partition"], state_key, state)
        for topic, out_key, value in outputs:
            await sinks[topic].send(key=out_key, value=value)


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Run the worker in this process until SIGTERM or SIGINT (how `fleetstream worker` and the demo start it)."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
