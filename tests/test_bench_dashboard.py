"""Smoke test of `bench dashboard` at a tiny size: a private broker, a generated fleet, Chromium loading the
fleet page; the figures are named and plausible, the rows generated are the fleet asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetstream.benchmarks.dashboard import bench_dashboard, to_table
from fleetstream.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_dashboard_loads_the_fleet_page_and_names_its_figures(tmp_path: Path) -> None:
    report = bench_dashboard(load_settings(home=tmp_path / "home"), vehicles=20, days=1, repeats=1,
                             screenshots=tmp_path / "shots")
    assert 0 < report["dashboard_load_ms"] < 120_000 and 0 < report["dashboard_load_warm_ms"] < 120_000
    assert report["workload"]["rows"]["kpis"] == 20 * 24 * 2  # health and uptime, hourly
    assert "/api/v1/dashboards/fleet" in report["api_calls_cold_median_ms"]
    assert (tmp_path / "shots" / "fleet-dashboard.png").stat().st_size > 10_000
    assert (tmp_path / "shots" / "dyno-run.png").stat().st_size > 10_000
    assert "dashboard_load_ms" in to_table(report)
