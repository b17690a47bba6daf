"""The topic model: one place that knows each topic's kind, record type, samples field and dead-letter topic."""

from __future__ import annotations

import pytest

from fleetstream.config import Settings, TopicSettings, TopicSpec
from fleetstream.schemas.deadletter import dead_letter
from fleetstream.sinks.clickhouse.consumer import dlq_topic_for
from fleetstream.topics import (
    RAW_TOPICS,
    UnknownTopic,
    dead_letter_topic,
    default_topic_names,
    record_type_of,
    sample_count,
    topic,
    valid_topic,
)


@pytest.mark.parametrize(("name", "kind", "record_type", "samples_field"), [
    ("telemetry.signals", "raw", "signal_batch", "samples"),
    ("telemetry.gps.valid", "valid", "gps_batch", "points"),
    ("telemetry.netstats.valid", "valid", "network_stats", None),
    ("fleet.locations", "raw", "fleet_location_batch", "locations"),
    ("analytics.kpi", "derived", "kpi", None),
    ("dlq.telemetry.signals.valid", "dead_letter", "dead_letter", None),
])
def test_each_topic_knows_what_it_carries(name: str, kind: str, record_type: str, samples_field: str | None) -> None:
    model = topic(name)
    assert (model.kind, model.record_type, model.samples_field) == (kind, record_type, samples_field)
    assert record_type_of(name) == record_type


def test_the_dead_letter_topic_is_dlq_of_the_source_topic_for_every_kind() -> None:
    """DESIGN.md: `dlq.<source topic>`; the worker, the GraphQL sink and the ClickHouse sink all ask this rule."""
    for name in ("telemetry.signals", "telemetry.signals.valid", "analytics.kpi"):
        assert topic(name).dead_letter_topic == dead_letter_topic(name) == dlq_topic_for(name) == f"dlq.{name}"
    letter_topic, _, _ = dead_letter(source_topic="dyno.samples.valid", partition=0, offset=1, key=b"k",
                                     original=b"x", stage="window", error_code="late", reason="late",
                                     sample_count=1, now_ms=0)
    assert letter_topic == "dlq.dyno.samples.valid"


def test_every_dead_letter_topic_the_stages_write_is_created_by_default() -> None:
    names = set(default_topic_names())
    for raw in RAW_TOPICS:
        assert {raw, valid_topic(raw), dead_letter_topic(raw), dead_letter_topic(valid_topic(raw))} <= names
    assert {t.name for t in TopicSettings().topics} == names


def test_a_name_that_is_no_pipeline_topic_is_refused_not_guessed() -> None:
    for name in ("telemetry.signal", "audit.log.valid", "telemetry.windows.valid"):
        with pytest.raises(UnknownTopic, match="no record type"):
            topic(name)


def test_samples_are_counted_by_the_record_types_samples_field() -> None:
    assert sample_count("gps_batch", {"points": [{}, {}, {}]}) == 3
    assert sample_count("network_stats", {"anything": 1}) == 1
    assert sample_count("dead_letter", {"sample_count": 7}) == 7


def test_a_configured_topic_has_its_partitions_from_config_and_the_rest_from_the_model() -> None:
    spec = Settings().topics.topics[0]
    assert spec.model is not None and spec.model.record_type == record_type_of(spec.name)
    assert TopicSpec(name="site.extra").model is None  # an operator's extra topic is allowed, but unknown
    assert not TopicSpec(name="dlq.telemetry.gps").keyed and TopicSpec(name="telemetry.gps").keyed
