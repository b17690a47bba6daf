"""Which record type travels on which topic, and what counts as one sample of it.

Producers, streams and sinks all need these two facts, so they live with the contract. A "sample" is the
unit the pipeline accounts for: `produced == valid + dead-lettered` is checked in samples, not messages,
because one message carries a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetstream.schemas.sample_batch import SampleBatch

__all__ = [
    "RAW_TOPICS",
    "RECORD_TYPE_BY_TOPIC",
    "SAMPLES_FIELD",
    "dlq_topic",
    "record_type_of",
    "sample_count",
    "valid_topic",
]

RAW_TOPICS: dict[str, str] = {
    "telemetry.signals": "signal_batch",
    "telemetry.dtcs": "dtc_batch",
    "telemetry.gps": "gps_batch",
    "telemetry.netstats": "network_stats",
    "dyno.samples": "dyno_sample_batch",
    "fleet.locations": "fleet_location_batch",
    "fleet.faults": "fleet_fault_batch",
}

RECORD_TYPE_BY_TOPIC: dict[str, str] = {
    **RAW_TOPICS,
    **{f"{topic}.valid": record_type for topic, record_type in RAW_TOPICS.items()},
    "telemetry.windows": "window_aggregate",
    "analytics.kpi": "kpi",
    "analytics.threshold.exceeded": "alert",
    "alert.created": "alert",
    "alert.acknowledged": "alert_ack",
    "audit.log": "audit_entry",
}

SAMPLES_FIELD: dict[str, str | None] = {
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
}
"""The array field holding a batch's samples; None for record types that are one sample each."""


def record_type_of(topic: str) -> str:
    """The record type on `topic`; dead-letter topics all carry `dead_letter`."""
    if topic.startswith("dlq."):
        return "dead_letter"
    try:
        return RECORD_TYPE_BY_TOPIC[topic]
    except KeyError:
        raise KeyError(f"no record type is configured for topic {topic!r}") from None


def sample_count(record_type: str, record: Mapping[str, Any] | SampleBatch) -> int:
    """How many samples a decoded record carries (one for unbatched record types)."""
    if isinstance(record, SampleBatch):
        return len(record)
    if record_type == "dead_letter":
        return int(record["sample_count"])
    field = SAMPLES_FIELD[record_type]
    return 1 if field is None else len(record[field])


def valid_topic(topic: str) -> str:
    return f"{topic}.valid"


def dlq_topic(topic: str) -> str:
    return f"dlq.{topic}"
