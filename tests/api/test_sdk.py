"""The async SDK (`AnalyticsClient`) against the real server on 127.0.0.1: login, events, metrics, segments,
dashboards and reports, and a tenant mix-up refused before any data is read."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest

from fleetstream.api.sdk import AnalyticsClient, AnalyticsError, TenantMismatch
from tests.api.conftest import PASSWORD, World

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _until(check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.3)


def test_sdk_covers_login_events_metrics_segments_dashboards_and_reports(world: World) -> None:
    async def scenario() -> None:
        now = dt.datetime.now(dt.UTC)
        async with AnalyticsClient(world.org_a, base_url=world.base_url) as client:
            login = await client.login(world.username("fm"), PASSWORD)
            assert login["role"] == "fleet_manager"
            session = f"sdk-{world.uid}"
            await client.events.track_page_view("/dashboard", user_id=session, timestamp=now)
            await client.events.track_click("export", user_id=session, timestamp=now + dt.timedelta(seconds=1))
            await client.events.track_batch([{"event_type": "conversion", "event_name": "report", "user_id": session,
                                              "timestamp": now + dt.timedelta(seconds=2)}])

            async def all_three() -> Any:
                found = await client.events.get_events(user_id=session, limit=10)
                return len(found) == 3 and found
            found = await _until(all_three)
            assert sorted(e["event_type"] for e in found) == ["click", "conversion", "page_view"]
            funnel = await client.events.funnel_analysis(["page_view", "click", "conversion"],
                                                         start_time=now - dt.timedelta(hours=1),
                                                         end_time=now + dt.timedelta(hours=1))
            assert funnel["steps"][-1]["actors"] >= 1

            name = f"sdk_gauge_{world.uid}"
            await client.metrics.create_metric(name, "gauge", unit="users")
            await client.metrics.set_gauge(name, 150, timestamp=now)
            await client.metrics.record_values([{"metric_id": name, "value": 50, "timestamp": now}])

            async def averaged() -> Any:
                points = (await client.metrics.aggregate(name, "avg", "day", start_time=now - dt.timedelta(hours=1),
                                                         end_time=now + dt.timedelta(hours=1), refresh=True))["points"]
                return points and points[0]["samples"] == 2 and points
            points = await _until(averaged)
            assert points and points[0]["value"] == 100.0

            segment = f"sdk_seg_{world.uid}"
            await client.segments.create_segment(segment, [{"field": "fleet_id", "operator": "eq", "value": "north"}])
            members = await client.segments.members(segment, start_time=now - dt.timedelta(days=1), end_time=now)
            assert {m["vehicle_id"] for m in members} >= set(world.vehicles_a)

            fleet = await client.dashboards.fleet(refresh=True)
            assert "fleet_summary" in fleet
            report = await client.reports.generate_report("fleet_health", "csv")
            assert (await client.reports.download(report["report_id"])).startswith(b"vehicle_id")

            with pytest.raises(AnalyticsError) as refused:
                await client.metrics.record_value("no_such_metric", 1)
            assert refused.value.status == 404

    asyncio.run(scenario())


def test_sdk_refuses_credentials_of_another_tenant(world: World) -> None:
    async def scenario() -> None:
        async with AnalyticsClient(world.org_a, base_url=world.base_url) as client:
            with pytest.raises(TenantMismatch):
                await client.login(world.username("fm_b"), PASSWORD)
        async with AnalyticsClient(world.org_a, world.token("fm_b"), base_url=world.base_url) as client:
            with pytest.raises(TenantMismatch):
                await client.dashboards.fleet()
        async with AnalyticsClient(world.org_b, world.token("fm_b"), base_url=world.base_url) as client:
            assert (await client.me())["org_id"] == world.org_b
        async with AnalyticsClient(world.org_a, "not-a-token", base_url=world.base_url) as client:
            with pytest.raises(AnalyticsError) as refused:
                await client.events.get_events()
            assert refused.value.status == 401

    asyncio.run(scenario())
