"""Kafka administration every part may need: creating topics and waiting for a consumer group.

- `create_topics`: the configured pipeline topics (`fleetstream topics create`), idempotently. An existing topic
  whose partition count differs from the configuration is reported as mismatched: keys are placed by murmur2
  modulo the partition count, so a vehicle's raw, valid and derived records would sit on partitions that
  different workers own. Kafka cannot shrink a topic, so fixing it is left to the operator.
- `ensure_topics`: ad-hoc topics (changelogs, benchmarks, tests) on a broker without auto-creation, returning
  only when every partition has a leader.
- `wait_for_group`: until a consumer group is stable with partitions assigned (a worker is consuming).

Part of the core so that the worker and the benches reach the broker's admin API without importing the
local-stack launcher or the demo.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fleetstream.config import KafkaSettings, Settings, TopicSettings
from fleetstream.errors import FleetstreamError, KafkaUnavailable

__all__ = ["Replication", "ReplicationError", "TopicReport", "TopicsNotReady", "create_topics", "ensure_topics",
           "min_insync_for", "replication_for", "wait_for_group", "with_cluster_replication"]

log = logging.getLogger(__name__)

_COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                          KafkaError.COORDINATOR_NOT_AVAILABLE}


class TopicsNotReady(KafkaUnavailable):
    """Topics that were created still have partitions without a leader at the deadline."""


def min_insync_for(factor: int) -> int:
    """2 from three copies on, else 1: with two copies a min ISR of 2 would stop every write while one broker is
    down, and with three it is what keeps an acknowledged write on two brokers."""
    return 2 if factor >= 3 else 1


class ReplicationError(FleetstreamError):
    """The configured replication factor cannot be met by the cluster."""


@dataclass(frozen=True)
class Replication:
    """How many copies of each partition, and how many must hold a write before `acks=all` acknowledges it."""

    factor: int
    min_insync: int
    brokers: int

    @classmethod
    def for_cluster(cls, brokers: int, configured: int | None = None) -> Replication:
        """The configured factor, else min(3, brokers), with `min_insync_for` it."""
        factor = configured or min(3, brokers)
        if factor > brokers:
            raise ReplicationError(f"topics.replication_factor {factor} needs {factor} brokers, the cluster has "
                                   f"{brokers}", "lower topics.replication_factor, or leave it unset to follow "
                                   "the cluster")
        if factor == 1 and brokers > 1:
            log.warning("replication factor 1 on a cluster of %d brokers: a partition is lost while its one broker "
                        "is down; leave topics.replication_factor unset for %d copies", brokers, min(3, brokers))
        return cls(factor=factor, min_insync=min_insync_for(factor), brokers=brokers)

    def topic_config(self) -> dict[str, str]:
        return {"min.insync.replicas": str(self.min_insync)}


def replication_for(kafka: KafkaSettings, topics: TopicSettings, admin: Any = None,
                    timeout_s: float = 10.0) -> Replication:
    """The replication of new topics on the cluster `kafka` reaches (one metadata request counts its brokers)."""
    admin = admin or AdminClient(kafka.client())
    brokers = len(admin.list_topics(timeout=timeout_s).brokers)
    return Replication.for_cluster(max(1, brokers), topics.replication_factor)


def with_cluster_replication(settings: Settings) -> Settings:
    """`settings` with `topics.replication_factor` filled in from the cluster, for parts that create topics of
    their own (the worker's changelogs, the users topic); unchanged when it is configured."""
    if settings.topics.replication_factor is not None:
        return settings
    factor = replication_for(settings.kafka, settings.topics).factor
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={"replication_factor": factor})})


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Existing keyed topics (not dlq.*) with another partition count than configured: name → (broker, config)."""
    replication: Replication | None = None


def create_topics(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 30.0) -> TopicReport:
    """Create every configured topic that does not exist yet; raise on any other failure."""
    admin = AdminClient(kafka.client())
    present = {name: len(meta.partitions) for name, meta in admin.list_topics(timeout=timeout_s).topics.items()}
    replication = replication_for(kafka, topics, admin, timeout_s)
    report = TopicReport(existing=sorted(t.name for t in topics.topics if t.name in present), replication=replication)
    report.mismatched = {t.name: (present[t.name], t.partitions) for t in topics.topics
                         if t.name in present and present[t.name] != t.partitions and t.keyed}
    for name, (actual, configured) in report.mismatched.items():
        log.warning("topic %s has %d partitions, configured %d: its keys are not co-partitioned with the other "
                    "topics", name, actual, configured)
    wanted = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=replication.factor,
                 config={"retention.ms": str(t.retention_ms), **replication.topic_config()})
        for t in topics.topics if t.name not in present
    ]
    if not wanted:
        return report
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result()
            report.created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process created it meanwhile
                raise
            report.existing.append(name)
    log.info("created %d topics, %d already existed", len(report.created), len(report.existing))
    return report


def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int = 3, *, replication_factor: int = 1,
                  config: Mapping[str, str] | None = None, timeout_s: float = 30.0,
                  client_config: Mapping[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet and wait until every one has a leader for each partition.

    Returns the names it created. For the configured pipeline topics use `create_topics`; this is for ad-hoc
    topics (changelogs, tests, benchmarks) on a broker without auto-creation.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, **(client_config or {})})
    present = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {}))
              for n in dict.fromkeys(names) if n not in present]
    created: list[str] = []
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    _wait_for_leaders(admin, names, timeout_s)
    return created


def _wait_for_leaders(admin: Any, names: Sequence[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=timeout_s).topics
        missing = [n for n in names if n not in topics or topics[n].error is not None
                   or any(p.leader < 0 for p in topics[n].partitions.values())]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TopicsNotReady(f"topics without a leader after {timeout_s:.0f} s: {', '.join(missing)}",
                                 "is every broker of the cluster up? `fleetstream stack status` shows the local one")
        time.sleep(0.1)


def wait_for_group(kafka: KafkaSettings, group: str, timeout_s: float = 120.0,
                   check: Callable[[], None] = lambda: None) -> None:
    """Wait until consumer group `group` is stable with partitions assigned (its members are consuming).

    `check` runs before every attempt, so a caller watching the member processes can raise when one died
    instead of waiting out the timeout.
    """
    admin = AdminClient(kafka.client())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check()
        try:
            description = admin.describe_consumer_groups([group])[group].result(timeout=10)
        except concurrent.futures.TimeoutError:  # a busy broker (the offsets topic being created): ask again
            continue
        except KafkaException as exc:  # a fresh broker's group coordinator may still be loading: ask again
            if exc.args[0].code() not in _COORDINATOR_NOT_READY:
                raise
            time.sleep(0.5)
            continue
        if description.state == ConsumerGroupState.STABLE and any(
                m.assignment.topic_partitions for m in description.members):
            return
        time.sleep(0.5)
    raise TimeoutError(f"consumer group {group} did not become stable within {timeout_s:.0f} s")
