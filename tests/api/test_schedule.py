"""Scheduled reports: the last complete week or month, written once to the folder and announced on Kafka."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer

from fleetstream.api.schedule import ReportScheduler, last_complete_period
from fleetstream.config import ReportSchedule
from fleetstream.schemas.codec import decode
from tests.api.conftest import World


def test_the_last_complete_week_runs_monday_to_monday_and_the_month_is_the_calendar_month() -> None:
    wednesday = dt.datetime(2026, 12, 2, 10, 31, tzinfo=dt.UTC)
    week = last_complete_period("weekly", wednesday)
    assert (week.label, week.range.start, week.range.end) == (
        "2026-W48", dt.datetime(2026, 11, 23, tzinfo=dt.UTC), dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    month = last_complete_period("monthly", wednesday)
    assert (month.label, month.range.start, month.range.end) == (
        "2026-11", dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    january = last_complete_period("monthly", dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert january.label == "2026-12"


@pytest.mark.integration
@pytest.mark.slow
def test_scheduled_reports_are_written_once_and_announced(world: World) -> None:
    t0 = dt.datetime.fromtimestamp(world.t0_ms / 1000, dt.UTC)
    api = world.settings.api.model_copy(update={"report_schedules": [
        ReportSchedule(org_id=world.org_a, kind="fleet_health", format="csv", every="weekly"),
        ReportSchedule(org_id=world.org_a, kind="alerts", format="pdf", every="monthly")]})
    services = dataclasses.replace(world.services, settings=world.settings.model_copy(update={"api": api}))
    scheduler = ReportScheduler(services)
    next_week = t0 + dt.timedelta(days=7)

    written = scheduler.run_due(next_week)
    week, month = last_complete_period("weekly", next_week), last_complete_period("monthly", next_week)
    assert [p.name for p in written] == [f"fleet_health-{week.label}.csv", f"alerts-{month.label}.pdf"]
    assert all(p.parent.name == world.org_a for p in written)
    assert scheduler.run_due(next_week) == []  # the files mark them done: nothing twice
    rows = list(csv.DictReader(io.StringIO(written[0].read_text())))
    assert sorted(r["vehicle_id"] for r in rows) == sorted(world.vehicles_a)  # org A's only

    consumer = Consumer({"bootstrap.servers": world.settings.kafka.bootstrap_servers,
                         "group.id": f"reports-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    consumer.subscribe([api.reports_topic])
    announced: list[dict[str, Any]] = []
    try:
        while len(announced) < 2:
            message = consumer.poll(30)
            assert message is not None, f"announcements missing: {announced}"
            if message.error() is None:
                announced.append(decode(message.value() or b"", "report_generated"))
    finally:
        consumer.close()
    assert {(a["path"], a["org_id"]) for a in announced} == {(str(p), world.org_a) for p in written}
    assert {a["schedule"] for a in announced} == {"weekly", "monthly"}
