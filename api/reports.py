"""Reports: a scoped query's rows written as CSV, XLSX (with a chart) or PDF (with a chart) to the report folder.

A report is `<report dir>/<id>.<format>` plus `<id>.json` (org, user, kind, rows, created): the metadata
says whose it is, so a download by another org is a 404 like any other out-of-scope read. A report whose
rows exceed `max_rows` is refused with the count, rather than cut short without saying so.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetstream.api import analytics
from fleetstream.api.analytics import DateRange
from fleetstream.api.rbac import Principal
from fleetstream.api.scoped import ScopedReader

__all__ = ["FORMATS", "KINDS", "Report", "ReportError", "ReportStore"]

FORMATS = ("csv", "xlsx", "pdf")
MEDIA_TYPES = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               "pdf": "application/pdf"}


class ReportError(ValueError):
    """The report cannot be made as asked (too many rows, unknown kind); the message says why."""


def _alerts(reader: ScopedReader, who: Principal, rng: DateRange, limit: int) -> list[dict[str, Any]]:
    return analytics.recent_alerts(reader, who, rng, limit=limit)


def _data_quality(reader: ScopedReader, who: Principal, rng: DateRange, limit: int) -> list[dict[str, Any]]:
    return reader.rows("""
        SELECT key AS vehicle_id, source_topic, stage, error_code, sum(sample_count) AS samples, count() AS messages
        FROM @dead_letters WHERE first_seen >= {from:DateTime64(3)} AND first_seen < {to:DateTime64(3)}
        GROUP BY vehicle_id, source_topic, stage, error_code ORDER BY vehicle_id, source_topic, error_code
        LIMIT {limit:UInt32}""", {**rng.params(), "limit": limit}, who)


def _fleet_health(reader: ScopedReader, who: Principal, rng: DateRange, limit: int) -> list[dict[str, Any]]:
    return analytics.health_by_vehicle(reader, who, rng)[:limit]


def _dyno_runs(reader: ScopedReader, who: Principal, rng: DateRange, limit: int) -> list[dict[str, Any]]:
    return analytics.dyno_runs(reader, who, rng)[:limit]


KINDS: dict[str, tuple[Callable[..., list[dict[str, Any]]], str, str]] = {
    "fleet_health": (_fleet_health, "vehicle_id", "health"),
    "alerts": (_alerts, "vehicle_id", "max_value"),
    "data_quality": (_data_quality, "error_code", "samples"),
    "dyno_runs": (_dyno_runs, "run_id", "peak_hp"),
}
"""Kind → (rows, the label column and the value column of its chart)."""


@dataclass(frozen=True)
class Report:
    report_id: str
    org_id: str
    user_id: str
    kind: str
    format: str
    rows: int
    created: str
    range: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ReportStore:
    def __init__(self, directory: Path, max_rows: int):
        self.directory = directory
        self.max_rows = max_rows

    def generate(self, reader: ScopedReader, who: Principal, kind: str, fmt: str, rng: DateRange,
                 vehicle_ids: list[str] | None = None) -> Report:
        if kind not in KINDS or fmt not in FORMATS:
            raise ReportError(f"kind is one of {', '.join(KINDS)}; format one of {', '.join(FORMATS)}")
        rows_of, label, value = KINDS[kind]
        rows = rows_of(reader, who, rng, self.max_rows + 1)
        if vehicle_ids:
            rows = [r for r in rows if r.get("vehicle_id", r.get("station")) in set(vehicle_ids)]
        if len(rows) > self.max_rows:
            raise ReportError(f"more than {self.max_rows} rows: narrow the date range or the vehicles")
        report = Report(uuid.uuid4().hex, who.org_id, who.user_id, kind, fmt, len(rows),
                        dt.datetime.now(dt.UTC).isoformat(), rng.as_dict())
        self.directory.mkdir(parents=True, exist_ok=True)
        content = {"csv": _csv, "xlsx": _xlsx, "pdf": _pdf}[fmt](report, rows, label, value)
        self._path(report.report_id, fmt).write_bytes(content)
        self._path(report.report_id, "json").write_text(json.dumps(report.as_dict()))
        return report

    def _path(self, report_id: str, ext: str) -> Path:
        return self.directory / f"{report_id}.{ext}"

    def find(self, report_id: str, who: Principal) -> tuple[Report, Path] | None:
        """The report and its file if it exists and belongs to the caller's org, else None."""
        if not report_id.isalnum():
            return None
        try:
            report = Report(**json.loads(self._path(report_id, "json").read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        if report.org_id != who.org_id:
            return None
        return report, self._path(report_id, report.format)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(rows[0]) if rows else []


def _csv(report: Report, rows: list[dict[str, Any]], _label: str, _value: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_columns(rows))
    writer.writerows([("" if v is None else v) for v in r.values()] for r in rows)
    return buf.getvalue().encode()


def _xlsx(report: Report, rows: list[dict[str, Any]], label: str, value: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = report.kind
    columns = _columns(rows)
    sheet.append(columns)
    for r in rows:
        sheet.append([v if isinstance(v, int | float | str) or v is None else str(v) for v in r.values()])
    if rows and label in columns and value in columns:
        chart = BarChart()
        chart.title = f"{report.kind}: {value} by {label}"
        col = columns.index(value) + 1
        chart.add_data(Reference(sheet, min_col=col, min_row=1, max_row=len(rows) + 1), titles_from_data=True)
        chart.set_categories(Reference(sheet, min_col=columns.index(label) + 1, min_row=2, max_row=len(rows) + 1))
        sheet.add_chart(chart, f"{chr(ord('A') + min(len(columns) + 1, 25))}2")
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _pdf(report: Report, rows: list[dict[str, Any]], label: str, value: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(orientation="landscape")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, f"fleetstream report: {report.kind}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.cell(0, 6, f"org {report.org_id} | {report.range['from']} to {report.range['to']} | {len(rows)} rows",
             new_x="LMARGIN", new_y="NEXT")
    _pdf_chart(pdf, rows, label, value)
    columns = _columns(rows)
    if columns:
        pdf.set_font("Helvetica", size=7)
        with pdf.table() as table:
            table.row([str(c) for c in columns])
            for r in rows:
                table.row(["" if v is None else _short(v) for v in r.values()])
    return bytes(pdf.output())


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)[:40]


def _pdf_chart(pdf: Any, rows: list[dict[str, Any]], label: str, value: str, width: float = 250,
               height: float = 50) -> None:
    """A bar chart of `value` by `label` drawn with rectangles (no image libraries needed)."""
    points = [(str(r.get(label)), float(r[value])) for r in rows[:40] if isinstance(r.get(value), int | float)]
    if not points:
        return
    top = max(v for _, v in points) or 1.0
    x0, y0 = pdf.get_x(), pdf.get_y() + 4
    bar = width / len(points)
    pdf.set_fill_color(70, 110, 180)
    for i, (name, v) in enumerate(points):
        h = max(0.0, v) / top * height
        pdf.rect(x0 + i * bar + 1, y0 + height - h, bar - 2, h, style="F")
        pdf.text(x0 + i * bar + 1, y0 + height + 4, name[:12])
    pdf.text(x0, y0 - 1, f"{value} by {label} (max {top:.4g})")
    pdf.set_y(y0 + height + 8)
