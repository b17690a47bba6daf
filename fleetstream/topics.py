"""Creates the configured topics, idempotently: existing topics are left as they are and reported.

An existing topic whose partition count differs from the configuration is reported as mismatched: keys are
placed by murmur2 modulo the partition count, so a vehicle's raw, valid and derived records would sit on
partitions that different workers own. Kafka cannot shrink a topic, so fixing it is left to the operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fleetstream.config import KafkaSettings, TopicSettings

__all__ = ["TopicReport", "create_topics"]

log = logging.getLogger(__name__)


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Existing keyed topics (not dlq.*) with another partition count than configured: name → (broker, config)."""


def create_topics(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 30.0) -> TopicReport:
    """Create every configured topic that does not exist yet; raise on any other failure."""
    admin = AdminClient(kafka.client())
    present = {name: len(meta.partitions) for name, meta in admin.list_topics(timeout=timeout_s).topics.items()}
    report = TopicReport(existing=sorted(t.name for t in topics.topics if t.name in present))
    report.mismatched = {t.name: (present[t.name], t.partitions) for t in topics.topics
                         if t.name in present and present[t.name] != t.partitions and not t.name.startswith("dlq.")}
    for name, (actual, configured) in report.mismatched.items():
        log.warning("topic %s has %d partitions, configured %d: its keys are not co-partitioned with the other "
                    "topics", name, actual, configured)
    wanted = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=topics.replication_factor,
                 config={"retention.ms": str(t.retention_ms)})
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
