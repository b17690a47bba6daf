"""Scheduled reports: after each complete week or month, `fleetstream serve` writes the configured reports.

A schedule (`api.report_schedules`) names an org, a report kind and format, and `weekly` (Monday 00:00 to
Monday 00:00 UTC) or `monthly` (calendar month, UTC). Every `schedule_check_s` the scheduler looks at the
last complete period of each schedule; when its file is missing it generates the report (scoped to the org,
as an admin of that org would see it), writes it to `<report dir>/scheduled/<org>/<kind>-<period>.<format>`,
and announces it on `api.reports_topic`. The file is the marker: a restart catches up on a missed period and
never writes one twice. The file is kept only once the broker acknowledged the announcement; otherwise it
is removed and tried again at the next check, so no report exists unannounced.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from fleetstream.api.analytics import DateRange
from fleetstream.api.publish import PublishError
from fleetstream.api.rbac import ALL_VEHICLES, Principal, Role
from fleetstream.api.reports import Report
from fleetstream.api.services import Services
from fleetstream.config import ReportSchedule

__all__ = ["ReportScheduler", "announce", "last_complete_period"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Period:
    label: str
    """2026-W48 or 2026-11."""
    range: DateRange


def last_complete_period(every: str, now: dt.datetime) -> Period:
    """The last week (Monday to Monday) or calendar month that ended at or before `now` (UTC)."""
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if every == "weekly":
        end = today - dt.timedelta(days=today.weekday())
        start = end - dt.timedelta(days=7)
        year, week, _ = start.isocalendar()
        return Period(f"{year}-W{week:02d}", DateRange(start, end))
    end = today.replace(day=1)
    start = (end - dt.timedelta(days=1)).replace(day=1)
    return Period(f"{start:%Y-%m}", DateRange(start, end))


def _safe(name: str) -> str:
    """An org id as a folder name (anything but letters, digits, `-_.` becomes `_`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def announce(services: Services, report: Report, path: Path, schedule: str) -> None:
    """Publish a report's announcement and wait for the broker (PublishError if it does not acknowledge)."""
    if services.publisher is None:
        raise PublishError("this server does not publish (no Kafka producer)")
    record = {"report_id": report.report_id, "org_id": report.org_id, "kind": report.kind, "format": report.format,
              "schedule": schedule, "path": str(path), "rows": report.rows,
              "range_from_ms": int(dt.datetime.fromisoformat(report.range["from"]).timestamp() * 1000),
              "range_to_ms": int(dt.datetime.fromisoformat(report.range["to"]).timestamp() * 1000),
              "created_ms": int(dt.datetime.fromisoformat(report.created).timestamp() * 1000),
              "user_id": report.user_id}
    services.publisher.send_confirmed(services.settings.api.reports_topic, "report_generated", report.org_id, record)


class ReportScheduler:
    """Runs the due schedules now (`run_due`) or every `schedule_check_s` in a thread (`start`/`stop`)."""

    def __init__(self, services: Services):
        self._services = services
        self._schedules = services.settings.api.report_schedules
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.directory = services.reports.directory / "scheduled"

    def path_of(self, schedule: ReportSchedule, period: Period) -> Path:
        return self.directory / _safe(schedule.org_id) / f"{schedule.kind}-{period.label}.{schedule.format}"

    def run_due(self, now: dt.datetime | None = None) -> list[Path]:
        """Generate every schedule's last complete period that has no file yet; the paths written."""
        written = []
        for schedule in self._schedules:
            period = last_complete_period(schedule.every, now or dt.datetime.now(dt.UTC))
            path = self.path_of(schedule, period)
            if path.exists():
                continue
            try:
                self._generate(schedule, period, path)
                written.append(path)
            except Exception as exc:  # a failed schedule is retried at the next check; the others still run
                log.error("scheduled %s report %s of org %s not written (retried at the next check): %s",
                          schedule.every, schedule.kind, schedule.org_id, exc)
        return written

    def _generate(self, schedule: ReportSchedule, period: Period, path: Path) -> None:
        services = self._services
        who = Principal("scheduler", "scheduler", Role.ADMIN, schedule.org_id, (ALL_VEHICLES,), "schedule")
        report = services.reports.generate(services.reader, who, schedule.kind, schedule.format, period.range,
                                           schedule.vehicle_ids)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes((services.reports.directory / f"{report.report_id}.{report.format}").read_bytes())
        try:
            announce(services, report, path, schedule.every)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
        log.info("scheduled report written: %s (%d rows)", path, report.rows)

    def start(self) -> None:
        if not self._schedules:
            return
        self._thread = threading.Thread(target=self._loop, name="report-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            self._stop.wait(self._services.settings.api.schedule_check_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
