"""Seed 004's side of `fleetstream serve` on the real broker and chDB: events, custom metrics and segments are
written over HTTP, travel through Kafka and the ClickHouse sink, and read back per tenant equal to direct SQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import HOUR_MS, MIN_MS, World, iso

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _eventually(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def _stored(world: World, table: str, org: str, n: int) -> None:
    def count() -> bool:
        rows = world.sql(f"SELECT count() AS n FROM fleetstream.{table} WHERE org_id = {{o:String}}", {"o": org})
        return int(rows[0]["n"]) >= n
    assert _eventually(count), f"{n} rows of {org} did not reach {table}"


@pytest.fixture(scope="module")
def tracked(world: World) -> dict[str, Any]:
    """A funnel's events for org A (u1: view, click, buy; u2: view, click; u3: view) and one event of org B."""
    t0 = world.t0_ms + 2 * HOUR_MS
    steps = {"u1": ["page_view", "click", "conversion"], "u2": ["page_view", "click"], "u3": ["page_view"]}
    batch = [{"event_type": kind, "event_name": f"{kind}-step", "user_id": user, "session_id": f"s-{user}",
              "vehicle_id": world.vehicles_a[0], "properties": {"i": i, "page": "/dash"},
              "timestamp": iso(t0 + i * MIN_MS), "event_id": f"{user}-{i}-{world.uid}"}
             for user, kinds in steps.items() for i, kind in enumerate(kinds)]
    with world.client("fm") as c:
        one = c.post("/api/v1/events/track", json=batch[0])
        assert one.status_code == 202, one.text
        many = c.post("/api/v1/events/track/batch", json={"events": batch[1:], "source": "web_app"})
        assert many.status_code == 202 and many.json()["accepted"] == len(batch) - 1
        again = c.post("/api/v1/events/track", json=batch[0])  # a client retry: same id, same time
        assert again.status_code == 202
    with world.client("fm_b") as c:
        assert c.post("/api/v1/events/track", json={"event_type": "page_view", "event_name": "b-only",
                                                    "user_id": "u1", "timestamp": iso(t0)}).status_code == 202
    _stored(world, "analytics_events", world.org_a, len(batch))
    _stored(world, "analytics_events", world.org_b, 1)
    return {"t0": t0, "batch": batch}


def _window(tracked: dict[str, Any]) -> dict[str, str]:
    return {"start_time": iso(tracked["t0"] - HOUR_MS), "end_time": iso(tracked["t0"] + HOUR_MS)}


def test_tracked_events_are_stored_once_and_queried_per_tenant(world: World, tracked: dict[str, Any]) -> None:
    expected = world.sql("SELECT event_id FROM fleetstream.analytics_events FINAL WHERE org_id = {o:String} "
                         "ORDER BY ts DESC, event_id", {"o": world.org_a})
    with world.client("exec") as c:
        rows = c.post("/api/v1/events/query", json={**_window(tracked), "limit": 1000}).json()
        clicks = c.post("/api/v1/events/query", json={**_window(tracked), "event_type": "click"}).json()
    assert [r["event_id"] for r in rows] == [r["event_id"] for r in expected]
    assert len(rows) == len(tracked["batch"])  # the retried event is one row
    assert {r["user_id"] for r in clicks} == {"u1", "u2"} and all(r["event_type"] == "click" for r in clicks)
    first = next(r for r in rows if r["event_id"] == tracked["batch"][0]["event_id"])
    assert first["properties"] == {"i": 0, "page": "/dash"} and first["source"] == ""
    assert {r["source"] for r in rows if r["event_id"] != first["event_id"]} == {"web_app"}
    with world.client("fm_b") as c:
        theirs = c.post("/api/v1/events/query", json={**_window(tracked), "limit": 1000}).json()
    assert [r["event_name"] for r in theirs] == ["b-only"]


def test_funnel_counts_users_through_the_steps_in_order(world: World, tracked: dict[str, Any]) -> None:
    spec = {**_window(tracked), "funnel_steps": ["page_view", "click", "conversion"]}
    with world.client("fm") as c:
        body = c.post("/api/v1/events/funnel", json=spec).json()
        reversed_ = c.post("/api/v1/events/funnel", json={**spec, "funnel_steps": ["conversion", "page_view"]}).json()
    assert [s["actors"] for s in body["steps"]] == [3, 2, 1]
    assert body["steps"][1]["conversion_from_previous"] == pytest.approx(2 / 3)
    assert body["steps"][2]["conversion_from_first"] == pytest.approx(1 / 3)
    assert [s["actors"] for s in reversed_["steps"]] == [1, 0]  # u1 converted after the view, not before
    with world.client("fm_b") as c:
        other = c.post("/api/v1/events/funnel", json=spec).json()
    assert [s["actors"] for s in other["steps"]] == [1, 0, 0]


def test_only_writers_track_and_only_readers_query(world: World) -> None:
    event = {"event_type": "click", "event_name": "x"}
    with world.client("exec") as c:
        assert c.post("/api/v1/events/track", json=event).status_code == 403
    with world.client("owner") as c:
        assert c.post("/api/v1/events/query", json={}).status_code == 403
    with world.client("fm") as c:
        too_many = c.post("/api/v1/events/track/batch", json={"events": [event] * 1001})
        assert too_many.status_code == 413
        assert c.post("/api/v1/events/track", json={"event_type": "click"}).status_code == 422


@pytest.fixture(scope="module")
def metric(world: World) -> dict[str, Any]:
    """A histogram with a region dimension, defined and given six values in two minutes."""
    name = f"latency_{world.uid}"
    t0 = world.t0_ms + 2 * HOUR_MS
    values = [(0, 100.0, "north"), (10_000, 300.0, "north"), (20_000, 200.0, "south"),
              (MIN_MS, 50.0, "north"), (MIN_MS + 5_000, 150.0, "south"), (MIN_MS + 6_000, 1000.0, "south")]
    with world.client("fm") as c:
        made = c.post("/api/v1/metrics", json={"name": name, "display_name": "Latency", "metric_type": "histogram",
                                               "unit": "ms", "dimensions": ["region"]})
        assert made.status_code == 201, made.text
        first = c.post("/api/v1/metrics/values", json={"metric_id": name, "value": values[0][1],
                                                       "dimensions": {"region": values[0][2]},
                                                       "timestamp": iso(t0 + values[0][0])})
        assert first.status_code == 202, first.text  # right after the definition: found without the sink
        rest = c.post("/api/v1/metrics/values/batch", json={"values": [
            {"metric_id": name, "value": v, "dimensions": {"region": r}, "timestamp": iso(t0 + dt)}
            for dt, v, r in values[1:]]})
        assert rest.status_code == 202, rest.text
    _stored(world, "metric_values", world.org_a, len(values))
    return {"name": name, "t0": t0}


@pytest.mark.parametrize("method", ["sum", "avg", "min", "max", "count", "p95"])
def test_metric_aggregate_equals_direct_sql(world: World, metric: dict[str, Any], method: str) -> None:
    expression = {"sum": "sum(value)", "avg": "avg(value)", "min": "min(value)", "max": "max(value)",
                  "count": "count()", "p95": "quantileExact(0.95)(value)"}[method]
    expected = world.sql(f"SELECT toStartOfMinute(ts) AS b, {expression} AS v FROM fleetstream.metric_values "
                         "WHERE org_id = {o:String} AND metric = {m:String} GROUP BY b ORDER BY b",
                         {"o": world.org_a, "m": metric["name"]})
    window = {"start_time": iso(metric["t0"] - HOUR_MS), "end_time": iso(metric["t0"] + HOUR_MS)}
    with world.client("exec") as c:
        body = c.post("/api/v1/metrics/aggregate", json={"metric_id": metric["name"], "aggregation_method": method,
                                                         "granularity": "minute", **window}).json()
    assert [(p["bucket"], p["value"]) for p in body["points"]] == [(r["b"], pytest.approx(r["v"])) for r in expected]
    assert len(body["points"]) == 2


def test_metric_aggregate_filters_and_groups_by_dimension(world: World, metric: dict[str, Any]) -> None:
    window = {"start_time": iso(metric["t0"] - HOUR_MS), "end_time": iso(metric["t0"] + HOUR_MS)}
    spec = {"metric_id": metric["name"], "aggregation_method": "sum", "granularity": "hour", **window}
    with world.client("fm") as c:
        south = c.post("/api/v1/metrics/aggregate", json={**spec, "filters": {"region": "south"}}).json()
        split = c.post("/api/v1/metrics/aggregate", json={**spec, "group_by": ["region"]}).json()
    assert [p["value"] for p in south["points"]] == [1350.0]
    assert {p["group"]["region"]: p["value"] for p in split["points"]} == {"north": 450.0, "south": 1350.0}


def test_metric_values_are_checked_against_their_definition(world: World, metric: dict[str, Any]) -> None:
    counter = f"logins_{world.uid}"
    with world.client("fm") as c:
        assert c.post("/api/v1/metrics", json={"name": counter, "metric_type": "counter"}).status_code == 201
        negative = c.post("/api/v1/metrics/values", json={"metric_id": counter, "value": -1})
        assert negative.status_code == 422 and "cannot be negative" in negative.text
        undeclared = c.post("/api/v1/metrics/values", json={"metric_id": metric["name"], "value": 1,
                                                            "dimensions": {"colour": "red"}})
        assert undeclared.status_code == 422 and "undeclared dimension(s) colour" in undeclared.text
        assert c.post("/api/v1/metrics/values", json={"metric_id": "nope", "value": 1}).status_code == 404
        listed = {m["name"] for m in c.get("/api/v1/metrics").json()}
        assert {metric["name"], counter} <= listed
    with world.client("fm_b") as c:  # another tenant neither sees nor writes org A's metric
        assert metric["name"] not in {m["name"] for m in c.get("/api/v1/metrics").json()}
        assert c.post("/api/v1/metrics/values", json={"metric_id": metric["name"], "value": 1}).status_code == 404
        assert c.post("/api/v1/metrics/aggregate", json={"metric_id": metric["name"]}).status_code == 404


def test_kpi_aggregate_equals_direct_sql(world: World) -> None:
    vehicles = ", ".join(f"'{v}'" for v in world.vehicles_a)  # test-made ids
    expected = world.sql(f"""SELECT toStartOfHour(period_end) AS b, avg(value) AS v FROM fleetstream.kpis
                             WHERE scope = 'vehicle' AND name = 'health_score' AND scope_id IN ({vehicles})
                             GROUP BY b ORDER BY b""")
    with world.client("exec") as c:
        body = c.post("/api/v1/metrics/aggregate", json={
            "metric_id": "health_score", "source": "kpi", "aggregation_method": "avg", "granularity": "hour",
            "start_time": world.range_params["from"], "end_time": world.range_params["to"]}).json()
        one = c.post("/api/v1/metrics/aggregate", json={
            "metric_id": "health_score", "source": "kpi", "aggregation_method": "max", "granularity": "day",
            "filters": {"vehicle_id": world.vehicles_a[2]}, "start_time": world.range_params["from"],
            "end_time": world.range_params["to"]}).json()
    assert [(p["bucket"], p["value"]) for p in body["points"]] == [(r["b"], pytest.approx(r["v"])) for r in expected]
    assert [p["value"] for p in one["points"]] == [20.0]


def _segment(name: str, *rules: dict[str, Any], match: str = "all") -> dict[str, Any]:
    return {"name": name, "match": match, "rules": list(rules)}


def test_segments_select_vehicles_by_kpis_and_attributes(world: World) -> None:
    a1, a2, a3 = world.vehicles_a
    params = {"from": world.range_params["from"], "to": world.range_params["to"]}
    low = _segment(f"low_health_{world.uid}", {"field": "kpi:health_score", "operator": "lt", "value": 70})
    with world.client("fm") as c:
        made = c.post("/api/v1/segments", json=low)
        assert made.status_code == 201, made.text
        members = c.get(f"/api/v1/segments/{low['name']}/members", params=params).json()
        alerting = c.post("/api/v1/segments/evaluate", params=params, json=_segment(
            "x", {"field": "open_alerts", "operator": "gte", "value": 1},
            {"field": "vehicle_id", "operator": "in", "value": [a2, a3, world.vehicle_b]})).json()
        either = c.post("/api/v1/segments/evaluate", params=params, json=_segment(
            "x", {"field": "kpi:uptime_pct", "operator": "eq", "value": 100},
            {"field": "dtcs", "operator": "gt", "value": 0}, match="any")).json()
        wrong = c.post("/api/v1/segments/evaluate", json=_segment("x", {"field": "fleet_id", "operator": "in",
                                                                          "value": "north"}))
        assert wrong.status_code == 422
    # latest health in the range: a1 60, a2 80, a3 20
    assert [v["vehicle_id"] for v in members["vehicles"]] == sorted([a1, a3])
    assert {v["vehicle_id"]: v["kpi:health_score"] for v in members["vehicles"]} == {a1: 60.0, a3: 20.0}
    assert [v["vehicle_id"] for v in alerting["vehicles"]] == sorted([a2, a3])  # b1 is not ours
    assert [v["vehicle_id"] for v in either["vehicles"]] == sorted([a1, a2, a3])
    with world.client("fm_b") as c:
        assert c.get(f"/api/v1/segments/{low['name']}/members").status_code == 404
        theirs = c.post("/api/v1/segments/evaluate", params=params, json=_segment(
            "x", {"field": "fleet_id", "operator": "eq", "value": "north"})).json()
    assert [v["vehicle_id"] for v in theirs["vehicles"]] == [world.vehicle_b]


def test_injections_in_segment_and_event_filters_match_nothing(world: World, tracked: dict[str, Any]) -> None:
    evil = "' OR '1'='1"
    with world.client("fm") as c:
        seg = c.post("/api/v1/segments/evaluate", json=_segment(
            "x", {"field": "fleet_id", "operator": "eq", "value": evil}))
        events = c.post("/api/v1/events/query", json={**_window(tracked), "user_id": evil})
        bad_field = c.post("/api/v1/segments/evaluate", json=_segment(
            "x", {"field": "kpi:x) OR 1=1 --", "operator": "eq", "value": 1}))
    assert seg.status_code == 200 and seg.json()["vehicles"] == []
    assert events.status_code == 200 and events.json() == []
    assert bad_field.status_code == 422
    assert world.sql("SELECT count() AS n FROM fleetstream.samples")[0]["n"] > 0
