"""Both pagination styles and the response models, on the captured response shapes (tests/data/fleet/)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest
import respx

from fleetstream.producers.fleet.errors import MalformedResponseError
from fleetstream.producers.fleet.models import (
    MotiveFaultCodesPage,
    MotiveLocationsResponse,
    MotiveVehiclesPage,
    SamsaraLatestStatsPage,
    SamsaraStatsHistoryPage,
    SamsaraVehiclesPage,
    parse,
)
from fleetstream.producers.fleet.motive import MotiveClient, date_chunks, motive_settings
from fleetstream.producers.fleet.samsara import SamsaraClient, samsara_settings
from tests.producers.fleet.conftest import fixture

MOTIVE = "https://api.gomotive.com"
SAMSARA = "https://api.samsara.com"


def motive() -> MotiveClient:
    return MotiveClient("k", motive_settings(rate_per_s=1000, burst=1000))


def samsara() -> SamsaraClient:
    return SamsaraClient("t", samsara_settings(rate_per_s=1000, burst=1000))


@respx.mock
def test_motive_offset_pages_stop_when_page_times_size_reaches_total() -> None:
    route = respx.get(f"{MOTIVE}/v1/users").mock(side_effect=[
        httpx.Response(200, json=fixture("fleetpull/motive_users__users_page_1_response.json")),
        httpx.Response(200, json=fixture("fleetpull/motive_users__users_page_2_response.json")),
    ])
    users = motive().users(per_page=2)
    assert [user.id for user in users] == [800001, 800002, 800003, 800004]
    assert [call.request.url.params["page_no"] for call in route.calls] == ["1", "2"]
    assert route.calls[0].request.url.params["per_page"] == "2"


@respx.mock
def test_motive_offset_pages_stop_on_an_empty_page() -> None:
    page = fixture("fleetpull/motive_vehicles__vehicle_record_synthetic.json")
    page["pagination"]["total"] = 1000  # a total that overstates: the empty page must end the walk
    empty = {"vehicles": [], "pagination": {"per_page": 100, "page_no": 2, "total": 1000}}
    route = respx.get(f"{MOTIVE}/v1/vehicles").mock(side_effect=[httpx.Response(200, json=page),
                                                                 httpx.Response(200, json=empty)])
    vehicles = motive().vehicles()
    assert [vehicle.vin for vehicle in vehicles] == ["TESTVIN0000000001"]
    assert route.call_count == 2


def test_per_page_is_capped_at_100() -> None:
    with respx.mock:
        route = respx.get(f"{MOTIVE}/v1/fault_codes").mock(return_value=httpx.Response(
            200, json=fixture("motive_docs_examples/fault_codes__docs_example.json")))
        faults = motive().fault_codes(per_page=500)
    assert route.calls[0].request.url.params["per_page"] == "100"
    assert faults[0].code == "P203F" and faults[0].vehicle.vin == "JTHBK1GGXF2187111"


@respx.mock
def test_samsara_cursor_pages_follow_end_cursor_until_has_next_page_is_false() -> None:
    route = respx.get(f"{SAMSARA}/fleet/vehicles").mock(side_effect=[
        httpx.Response(200, json=fixture("fleetpull/samsara_vehicles__vehicles_page_response.json")),
        httpx.Response(200, json=fixture("fleetpull/samsara_vehicles__vehicles_terminal_response.json")),
    ])
    vehicles = samsara().vehicles()
    assert len(vehicles) == 7
    assert "after" not in route.calls[0].request.url.params
    assert route.calls[1].request.url.params["after"] == "00000000-0000-0000-0000-000000000018"
    assert vehicles[4].samsara_vin == "4SYNTHV1N00000001"


@respx.mock
def test_samsara_short_and_empty_pages_are_walked_through() -> None:
    page = {"data": [], "pagination": {"endCursor": "c1", "hasNextPage": True}}
    last = fixture("fleetpull/samsara_drivers__drivers_terminal_response.json")
    respx.get(f"{SAMSARA}/fleet/drivers").mock(side_effect=[httpx.Response(200, json=page),
                                                            httpx.Response(200, json=last)])
    assert [driver.id for driver in samsara().drivers()] == ["7100003"]


@respx.mock
def test_samsara_next_page_without_a_cursor_is_malformed_not_an_endless_loop() -> None:
    page = {"data": [], "pagination": {"endCursor": "", "hasNextPage": True}}
    respx.get(f"{SAMSARA}/fleet/drivers").mock(return_value=httpx.Response(200, json=page))
    with pytest.raises(MalformedResponseError, match=r"samsara drivers: .*pagination\.endCursor"):
        samsara().drivers()


@respx.mock
def test_samsara_assignment_request_shape() -> None:
    route = respx.get(f"{SAMSARA}/fleet/driver-vehicle-assignments").mock(side_effect=[
        httpx.Response(200, json=fixture(
            "fleetpull/samsara_driver_vehicle_assignments__driver_vehicle_assignments_page_response.json")),
        httpx.Response(200, json=fixture(
            "fleetpull/samsara_driver_vehicle_assignments__driver_vehicle_assignments_terminal_response.json")),
    ])
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
    assignments = samsara().assignments(start, end)
    params = route.calls[0].request.url.params
    assert (params["filterBy"], params["startTime"], params["endTime"]) == (
        "vehicles", "2026-01-01T00:00:00.000Z", "2026-01-03T00:00:00.000Z")
    assert len(assignments) == 5 and assignments[2].isPassenger


def test_samsara_takes_at_most_three_stat_types() -> None:
    with pytest.raises(ValueError, match="1 to 3 stat types"):
        samsara().stats_history(["gps", "engineStates", "obdOdometerMeters", "faultCodes"],
                                datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


@respx.mock
def test_motive_history_is_split_into_three_month_calls() -> None:
    route = respx.get(url__regex=rf"{MOTIVE}/v3/vehicle_locations/42.*").mock(return_value=httpx.Response(
        200, json=fixture("fleetpull/motive_vehicle_locations_v3__record_synthetic.json")))
    locations = motive().location_history(42, date(2026, 1, 1), date(2026, 6, 30))
    ranges = [(c.request.url.params["start_date"], c.request.url.params["end_date"]) for c in route.calls]
    assert ranges == [("2026-01-01", "2026-03-30"), ("2026-03-31", "2026-06-27"), ("2026-06-28", "2026-06-30")]
    assert len(locations) == 6


def test_date_chunks_cover_the_range_exactly_once() -> None:
    chunks = date_chunks(date(2025, 1, 1), date(2025, 12, 31))
    days = sum((end - start).days + 1 for start, end in chunks)
    assert days == 365 and all((end - start).days < 89 for start, end in chunks)
    assert date_chunks(date(2025, 1, 2), date(2025, 1, 1)) == []


@pytest.mark.parametrize(("model", "name"), [
    (MotiveVehiclesPage, "fleetpull/motive_vehicles__vehicle_record_synthetic.json"),
    (MotiveLocationsResponse, "fleetpull/motive_vehicle_locations_v3__record_synthetic.json"),
    (MotiveFaultCodesPage, "motive_docs_examples/fault_codes__docs_example.json"),
    (SamsaraVehiclesPage, "fleetpull/samsara_vehicles__vehicles_page_response.json"),
    (SamsaraStatsHistoryPage, "fleetpull/samsara_gps_readings__gps_readings_page_response.json"),
    (SamsaraStatsHistoryPage, "fleetpull/samsara_engine_states__engine_states_page_response.json"),
    (SamsaraStatsHistoryPage, "fleetpull/samsara_odometer_readings__odometer_readings_page_response.json"),
])
def test_captured_responses_parse(model: type, name: str) -> None:
    assert parse(model, fixture(name), "p", "e") is not None


def test_unknown_fields_are_ignored() -> None:
    page = fixture("fleetpull/samsara_vehicles__vehicles_terminal_response.json")
    page["data"][0]["brandNewField"] = {"nested": True}
    page["brandNewTopLevel"] = 1
    assert parse(SamsaraVehiclesPage, page, "samsara", "vehicles").data[0].id == "281000000000002"


def test_spec_example_latitude_out_of_range_is_rejected_naming_the_field() -> None:
    body = fixture("samsara_openapi_examples/vehicle_stats_history_or_feed__spec_example.json")
    with pytest.raises(MalformedResponseError) as caught:
        parse(SamsaraStatsHistoryPage, body, "samsara", "vehicle_stats_history")
    assert caught.value.field == "data.0.gps.0.latitude"
    assert str(caught.value).startswith("samsara vehicle_stats_history: malformed response at field")


def test_spec_example_external_ids_placeholder_is_rejected() -> None:
    body = fixture("samsara_openapi_examples/fleet_vehicles_list__spec_example.json")
    with pytest.raises(MalformedResponseError, match=r"data\.0\.externalIds"):
        parse(SamsaraVehiclesPage, body, "samsara", "vehicles")


def test_latest_stats_use_singular_keys() -> None:
    body = fixture("samsara_openapi_examples/vehicle_stats_snapshot__spec_example.json")
    body["data"][0]["gps"]["latitude"] = 34.142  # the spec's placeholder 122.142 is not a latitude
    stats = parse(SamsaraLatestStatsPage, body, "samsara", "vehicle_stats").data[0]
    assert stats.engineState is not None and stats.engineState.value == "On"
    assert stats.obdOdometerMeters is not None and stats.obdOdometerMeters.value == 14010293


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda b: b["vehicle_locations"][0]["vehicle_location"].pop("located_at"), "located_at"),
    (lambda b: b["vehicle_locations"][0]["vehicle_location"].update(located_at="2026-06-01 12:00:00"), "located_at"),
    (lambda b: b["vehicle_locations"][0]["vehicle_location"].update(lon="west"), "lon"),
    (lambda b: b.update(vehicle_locations={"not": "a list"}), "vehicle_locations"),
])
def test_malformed_motive_locations_are_rejected(mutate, field: str) -> None:
    body = fixture("fleetpull/motive_vehicle_locations_v3__record_synthetic.json")
    mutate(body)
    with pytest.raises(MalformedResponseError) as caught:
        parse(MotiveLocationsResponse, body, "motive", "vehicle_locations_v3")
    assert field in caught.value.field
