"""The pipeline's topics and what each one carries: one model every part asks.

A topic is one of four kinds. Producers write the *raw* topics; the worker validates each into
`<raw>.valid` and derives the *derived* topics from the valid ones; any stage that cannot handle a record
sends it to the dead-letter topic `dlq.<source topic>` (DESIGN.md), whatever kind the source topic is,
so a letter's topic always names where it came from. Partition counts and retention are configuration
(`fleetstream.config.TopicSettings`, whose defaults are `default_topic_names()`); the facts here are not.

A "sample" is the unit the pipeline accounts for: `produced == valid + dead-lettered` is checked in samples,
not messages, because one message carries a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEAD_LETTER_PREFIX",
    "DERIVED_TOPICS",
    "RAW_TOPICS",
    "SAMPLES_FIELD",
    "Topic",
    "TopicKind",
    "UnknownTopic",
    "dead_letter_topic",
    "default_topic_names",
    "is_dead_letter_topic",
    "record_type_of",
    "sample_count",
    "samples_field_of",
    "topic",
    "valid_topic",
]

TopicKind = Literal["raw", "valid", "derived", "dead_letter"]

DEAD_LETTER_PREFIX = "dlq."
VALID_SUFFIX = ".valid"

RAW_TOPICS: Mapping[str, str] = {
    "telemetry.signals": "signal_batch",
    "telemetry.dtcs": "dtc_batch",
    "telemetry.gps": "gps_batch",
    "telemetry.netstats": "network_stats",
    "dyno.samples": "dyno_sample_batch",
    "fleet.locations": "fleet_location_batch",
    "fleet.faults": "fleet_fault_batch",
}
"""The topics producers write and the worker validates, with their record types (named, not guessed from
prefixes: the read side's `audit.log` taken for a raw topic made the worker read it and wait for it before
any idle flush)."""

DERIVED_TOPICS: Mapping[str, str] = {
    "telemetry.windows": "window_aggregate",
    "analytics.kpi": "kpi",
    "analytics.threshold.exceeded": "alert",
    "alert.created": "alert",
    "alert.acknowledged": "alert_ack",
    "audit.log": "audit_entry",
    "analytics.events": "analytics_event",
    "analytics.metric.values": "metric_value",
    "analytics.definitions": "analytics_definition",
    "analytics.report.generated": "report_generated",
}
"""Topics the worker and the read side write from other records, with their record types."""

SAMPLES_FIELD: Mapping[str, str | None] = {
    "signal_batch": "samples",
    "dtc_batch": "dtcs",
    "gps_batch": "points",
    "network_stats": None,
    "dyno_sample_batch": "samples",
    "fleet_location_batch": "locations",
    "fleet_fault_batch": "faults",
    "window_aggregate": None,
    "kpi": None,
    "alert": None,
    "alert_ack": None,
    "audit_entry": None,
    "user_account": None,
    "analytics_event": None,
    "metric_value": None,
    "analytics_definition": None,
    "report_generated": None,
    "dead_letter": None,
}
"""The array field holding a batch's samples per record type; None for record types that are one sample each."""


@dataclass(frozen=True)
class Topic:
    """What travels on one topic: its record type, the field holding its samples, where its failures go."""

    name: str
    kind: TopicKind
    record_type: str

    @property
    def samples_field(self) -> str | None:
        return SAMPLES_FIELD[self.record_type]

    @property
    def dead_letter_topic(self) -> str:
        return dead_letter_topic(self.name)

    @property
    def keyed(self) -> bool:
        """Whether records are placed by vehicle key, so the partition count must match the other keyed topics."""
        return self.kind != "dead_letter"

    def sample_count(self, record: Mapping[str, Any] | Sized) -> int:
        return sample_count(self.record_type, record)


class UnknownTopic(KeyError):
    """A topic name the pipeline has no record type for."""


def is_dead_letter_topic(name: str) -> bool:
    """Whether `name` is a dead-letter topic (any `dlq.*`, including ones created after a consumer started)."""
    return name.startswith(DEAD_LETTER_PREFIX)


def topic(name: str) -> Topic:
    """The model of topic `name`; UnknownTopic (a KeyError) for a name that is no pipeline topic."""
    if is_dead_letter_topic(name):
        return Topic(name, "dead_letter", "dead_letter")
    if name in RAW_TOPICS:
        return Topic(name, "raw", RAW_TOPICS[name])
    if name in DERIVED_TOPICS:
        return Topic(name, "derived", DERIVED_TOPICS[name])
    source = name.removesuffix(VALID_SUFFIX)
    if source != name and source in RAW_TOPICS:
        return Topic(name, "valid", RAW_TOPICS[source])
    raise UnknownTopic(f"no record type is configured for topic {name!r}")


def record_type_of(name: str) -> str:
    """The record type on topic `name`; dead-letter topics all carry `dead_letter`."""
    return topic(name).record_type


def samples_field_of(record_type: str) -> str | None:
    """The array field of `record_type` holding its samples; None when a record is one sample."""
    return SAMPLES_FIELD[record_type]


def sample_count(record_type: str, record: Mapping[str, Any] | Sized) -> int:
    """How many samples a decoded record carries (one for unbatched record types; a dead letter says it).

    A record decoded into columns (`fleetstream.schemas.sample_batch.SampleBatch`) is its samples' length."""
    if not isinstance(record, Mapping):
        return len(record)
    if record_type == "dead_letter":
        return int(record["sample_count"])
    field = SAMPLES_FIELD[record_type]
    return 1 if field is None else len(record[field])


def valid_topic(name: str) -> str:
    """Where the worker writes the valid part of raw topic `name`."""
    return f"{name}{VALID_SUFFIX}"


def dead_letter_topic(name: str) -> str:
    """Where records of topic `name` that a stage cannot handle go: `dlq.<source topic>`, for every kind."""
    return f"{DEAD_LETTER_PREFIX}{name}"


def default_topic_names() -> list[str]:
    """Every topic `fleetstream topics create` makes by default: raw, valid, derived, and a dead-letter topic each."""
    names = [*RAW_TOPICS, *map(valid_topic, RAW_TOPICS), *DERIVED_TOPICS]
    return names + [dead_letter_topic(n) for n in names]
