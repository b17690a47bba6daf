"""The real pipeline for end-to-end tests: `fleetstream worker` and `fleetstream sink clickhouse` as child
processes on the session's broker, with a fresh home (and so a fresh embedded chDB store) per test module.

Test modules import the `pipeline` fixture (`from tests.pipeline import pipeline  # noqa: F401`) and the
helpers. The children are started and awaited the way `fleetstream demo` does it (`fleetstream.demo.Services`
and its readiness helpers); the store is read only through the running sink's query endpoint
(`fleetstream.store.query_server.query`), because chDB opens a data directory from one process only.

Both children use the configured topic names and the fixed consumer groups, so on the shared session broker
tests isolate themselves by their own vehicle ids (or batch ids) and assert only on those rows.

Two settings differ from the defaults, through the children's environment:
- the validation horizon (`max_age_ms`) is 100 years: the public client's README examples carry event
  times from 1970 and mid-2025, which the default 30-day horizon dead-letters as `too_old`;
- table retention is 25,000 days (68 years), or TTL would drop the 1970 rows. Not more: `toDateTime(ts) +
  INTERVAL n DAY` overflows DateTime's 2106 limit for today's rows at ~29,000 days and ClickHouse then
  drops them on insert, silently;
- the analytics KPI period is 100 years. With the default 5 minutes the worker closes every empty period
  between a key's first event time and its newest (streams/analytics.py, `while period_start + period <=
  watermark`): the README's 1970 signal next to a 2026 one makes millions of KPI records, which bury the
  rows under test for many minutes. That is a streams bug (reported), not what these tests are about.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from fleetstream.admin import create_topics, wait_for_group
from fleetstream.config import KafkaSettings, Settings
from fleetstream.demo import Services, _wait_for_sink
from fleetstream.schemas import codec
from fleetstream.store.query_server import query
from fleetstream.topics import record_type_of

__all__ = ["MAX_AGE_MS", "Pipeline", "TopicReader", "pipeline"]

MAX_AGE_MS = 100 * 365 * 24 * 3600 * 1000
RETENTION_DAYS = 25_000
KPI_PERIOD_MS = 100 * 365 * 24 * 3600 * 1000
WORKER_GROUP = "fleetstream-streams"

Row = dict[str, Any]


@dataclass
class Pipeline:
    """A running worker and ClickHouse sink, and how to read what they stored."""

    settings: Settings
    services: Services

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[Row]:
        """Run a read statement through the sink's query endpoint; rows as dicts by column name."""
        self.services.check()  # never open the store in-process because the sink died
        result = query(self.settings, sql, parameters or {})
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

    def wait_for_rows(self, sql: str, parameters: dict[str, Any] | None, expected: int, timeout_s: float = 60.0,
                      settle_s: float = 2.5) -> list[Row]:
        """Rows of `sql` once there are at least `expected` and the count held still for `settle_s`.

        The settle period outlasts the sink's batch interval, so a duplicate arriving right behind the
        expected rows is seen too. On timeout it returns what is there: the caller's assertion shows the gap.
        """
        deadline = time.monotonic() + timeout_s
        rows = self.rows(sql, parameters)
        stable_since, count = time.monotonic(), len(rows)
        while time.monotonic() < deadline:
            if len(rows) != count:
                stable_since, count = time.monotonic(), len(rows)
            if len(rows) >= expected and time.monotonic() - stable_since >= settle_s:
                return rows
            time.sleep(0.5)
            rows = self.rows(sql, parameters)
        return rows


class TopicReader:
    """Reads topics from the offsets they had when it was made: what a test wrote to them, decoded."""

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str]):
        self._consumer = Consumer(kafka.client(**{"group.id": f"test-pipeline-reader-{uuid.uuid4().hex[:8]}",
                                                  "enable.auto.commit": False}))
        metadata = self._consumer.list_topics(timeout=10)
        start = []
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
                start.append(TopicPartition(topic, partition, high))
        self._consumer.assign(start)
        self.records: list[tuple[str, int, int, dict[str, Any]]] = []
        """(topic, partition, offset, decoded record) of everything read so far."""

    def read_until(self, done: Callable[[list[tuple[str, int, int, dict[str, Any]]]], bool],
                   timeout_s: float = 60.0) -> list[tuple[str, int, int, dict[str, Any]]]:
        """Consume until `done(records)` holds (then a little longer, to see duplicates) or the time is up."""
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
            for message in self._consumer.consume(num_messages=1000, timeout=0.5):
                topic, value = message.topic(), message.value()
                if message.error() or topic is None or value is None:
                    continue
                self.records.append((topic, message.partition() or 0, message.offset() or 0,
                                     codec.decode(value, record_type_of(topic))))
            if settle_until is None and done(self.records):
                settle_until = time.monotonic() + 1.5
        return self.records

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Worker and ClickHouse sink children with a fresh home and store, for one test module."""
    home = tmp_path_factory.mktemp("pipeline-home")
    settings = Settings(home=home, kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    settings.clickhouse.dsn = None  # always the module's own embedded store under `home`
    create_topics(settings.kafka, settings.topics)
    services = Services(settings)
    try:
        with pytest.MonkeyPatch.context() as env:  # the children read their settings from the environment
            env.setenv("FLEETSTREAM_VALIDATION__MAX_AGE_MS", str(MAX_AGE_MS))
            env.setenv("FLEETSTREAM_CLICKHOUSE__RETENTION_DAYS", str(RETENTION_DAYS))
            env.setenv("FLEETSTREAM_STREAMS__KPI_PERIOD_MS", str(KPI_PERIOD_MS))
            env.delenv("FLEETSTREAM_CLICKHOUSE__DSN", raising=False)
            # one static member for every module's sink: the next module's takes the partitions over at once
            env.setenv("FLEETSTREAM_CLICKHOUSE__INSTANCE_ID", "fleetstream-test-pipeline-sink")
            env.delenv("FLEETSTREAM_CONFIG", raising=False)
            services.start("worker", "worker")
            services.start("sink-clickhouse", "sink", "clickhouse")
        _wait_for_sink(settings, services)
        wait_for_group(settings.kafka, WORKER_GROUP, check=services.check)
        yield Pipeline(settings, services)
    finally:
        services.stop()
