"""Creates the configured topics, idempotently: existing topics are left as they are and reported."""

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


def create_topics(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 30.0) -> TopicReport:
    """Create every configured topic that does not exist yet; raise on any other failure."""
    admin = AdminClient(kafka.client())
    present = set(admin.list_topics(timeout=timeout_s).topics)
    report = TopicReport(existing=sorted(t.name for t in topics.topics if t.name in present))
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
