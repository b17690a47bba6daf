"""The unification rules of fleet-apis.md and the Avro batch records they produce."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from fleetstream.producers.fleet.models import (
    MotiveFaultCodesPage,
    MotiveLocation,
    MotiveLocationsResponse,
    MotiveVehicle,
    SamsaraAssignment,
    SamsaraVehicleStats,
    parse,
)
from fleetstream.producers.fleet.unify import (
    AssignmentIndex,
    fault_batches,
    location_batches,
    motive_engine_state,
    motive_fault,
    motive_location,
    samsara_faults,
    samsara_locations,
    to_ms,
)
from fleetstream.schemas.codec import decode, encode
from tests.producers.fleet.conftest import fixture


def motive_point(**fields: Any) -> MotiveLocation:
    return MotiveLocation.model_validate({"located_at": "2026-06-01T12:00:00Z", "lat": 41.85, "lon": -87.65, **fields})


@pytest.mark.parametrize(("kind", "speed", "state"), [
    ("vehicle_stopped", 0.0, "Idle"), ("gps_stopped", None, "Idle"), ("ignition_off", 0.0, "Off"),
    ("engine_stop", None, "Off"), ("breadcrumb", 40.0, "On"), ("breadcrumb", 3.0, "Idle"),
    ("breadcrumb", 3.1, "On"), ("breadcrumb", None, None), ("vehicle_moving", None, "On"), (None, 55.0, "On"),
])
def test_motive_engine_state_rules(kind: str | None, speed: float | None, state: str | None) -> None:
    assert motive_engine_state(kind, speed) == state


def test_motive_location_from_the_captured_record() -> None:
    page = parse(MotiveLocationsResponse, fixture("fleetpull/motive_vehicle_locations_v3__record_synthetic.json"),
                 "motive", "vehicle_locations_v3")
    vehicle = MotiveVehicle(id=8000001, number="TEST-001", vin="TESTVIN0000000001")
    with_driver = motive_location(vehicle, page.items[1])
    assert with_driver.timestamp_ms == to_ms(datetime(2026, 6, 1, 12, tzinfo=UTC))
    assert (with_driver.driver_id, with_driver.driver_name) == ("1000002", "Test Driver")
    assert with_driver.odometer_miles == pytest.approx(123456.78901234567)
    assert with_driver.location_description == "Anytown, ST" and with_driver.heading_degrees == 12.99
    assert with_driver.fleet_number == "TEST-001" and with_driver.vin == "TESTVIN0000000001"
    assert motive_location(vehicle, page.items[0]).driver_id is None


def test_motive_metric_vehicles_are_converted_to_miles() -> None:
    metric = MotiveVehicle(id=1, metric_units=True)
    point = motive_location(metric, motive_point(speed=100.0, true_odometer=1000.0, odometer=999.0, type="breadcrumb"))
    assert point.speed_mph == pytest.approx(62.1371)
    assert point.odometer_miles == pytest.approx(621.371)
    imperial = motive_location(MotiveVehicle(id=1), motive_point(speed=100.0, odometer=999.0))
    assert imperial.speed_mph == 100.0 and imperial.odometer_miles == 999.0  # odometer when no true_odometer


def test_motive_fault_from_the_docs_example() -> None:
    page = parse(MotiveFaultCodesPage, fixture("motive_docs_examples/fault_codes__docs_example.json"), "motive", "f")
    fault = motive_fault(page.items[0])
    assert (fault.provider_vehicle_id, fault.fault_id, fault.code, fault.status) == ("126207", "48401", "P203F",
                                                                                   "closed")
    assert fault.last_observed_ms == to_ms(datetime(2024, 3, 7, 19, 45, 27, tzinfo=UTC))


def samsara_stats() -> SamsaraVehicleStats:
    return SamsaraVehicleStats.model_validate({
        "id": "281474980000011", "name": "Truck 201",
        "externalIds": {"samsara.serial": "GSYNTH00001A", "samsara.vin": "SYNTH000000000011"},
        "gps": fixture("fleetpull/samsara_gps_readings__gps_readings_page_response.json")["data"][0]["gps"],
        "engineStates": [{"time": "2026-01-01T12:00:03.062Z", "value": "On"},
                         {"time": "2026-01-01T12:20:15.500Z", "value": "Idle"}],
        "obdOdometerMeters": [{"time": "2026-01-01T11:40:00.000Z", "value": 152000000},
                              {"time": "2026-01-01T12:00:07.400Z", "value": 152000345}],
    })


def test_samsara_joins_engine_state_odometer_and_driver_by_time() -> None:
    assignments = AssignmentIndex([
        SamsaraAssignment.model_validate({"driver": {"id": "d1", "name": "Ann Driver"},
                                          "vehicle": {"id": "281474980000011"}, "startTime": "2026-01-01T11:00:00Z",
                                          "endTime": "2026-01-01T12:15:00Z"}),
        SamsaraAssignment.model_validate({"driver": {"id": "p1", "name": "Passenger"}, "isPassenger": True,
                                          "vehicle": {"id": "281474980000011"}, "startTime": "2026-01-01T11:00:00Z",
                                          "endTime": ""}),
    ])
    first, second = samsara_locations(samsara_stats(), assignments)
    assert first.vin == "SYNTH000000000011" and first.fleet_number == "Truck 201"
    assert first.timestamp_ms == to_ms(datetime(2026, 1, 1, 12, 0, 5, 100000, tzinfo=UTC))
    assert first.engine_state == "On"  # the 12:00:03 reading, at or before the fix
    assert first.odometer_miles == pytest.approx(152000345 / 1609.344)  # 2 s away beats 20 min away
    assert (first.driver_id, first.driver_name) == ("d1", "Ann Driver")
    assert first.location_description == "100 Example St, Example City, TX"
    assert (first.speed_mph, first.heading_degrees) == (58.4, 270)
    assert second.engine_state == "Idle"
    assert second.odometer_miles is None  # 12:30:10: nearest reading is 30 min 3 s away
    assert second.driver_id is None  # after the assignment ended; the passenger does not count


def test_samsara_engine_state_before_any_reading_is_unknown() -> None:
    stats = samsara_stats().model_copy(update={"engineStates": []})
    assert {point.engine_state for point in samsara_locations(stats, AssignmentIndex([]))} == {None}


def faults_stats(snapshots: list[tuple[str, list[str]]]) -> SamsaraVehicleStats:
    return SamsaraVehicleStats.model_validate({"id": "v1", "faultCodes": [
        {"time": time, "obdii": {"diagnosticTroubleCodes": [
            {"txId": 0, "confirmedDtcs": [{"dtcShortCode": code} for code in codes]}]}}
        for time, codes in snapshots]})


def test_samsara_fault_snapshots_fold_into_episodes() -> None:
    faults = samsara_faults(faults_stats([
        ("2026-01-01T10:00:00Z", ["P0087"]), ("2026-01-01T10:05:00Z", ["P0087", "P0300"]),
        ("2026-01-01T10:10:00Z", ["P0300"]), ("2026-01-01T10:15:00Z", ["P0087", "P0300"]),
    ]))
    summary = sorted((f.code, f.status, f.first_observed_ms, f.last_observed_ms) for f in faults)
    t = lambda minute: to_ms(datetime(2026, 1, 1, 10, minute, tzinfo=UTC))  # noqa: E731
    assert summary == [("P0087", "closed", t(0), t(5)), ("P0087", "open", t(15), t(15)),
                       ("P0300", "open", t(5), t(15))]
    assert len({f.fault_id for f in faults}) == 2  # the two P0087 episodes share the code's id; start sets them apart


def test_location_batches_are_valid_avro_with_a_stable_batch_id() -> None:
    points = samsara_locations(samsara_stats(), AssignmentIndex([]))
    batches = location_batches(reversed(points))
    assert len(batches) == 1
    batch = batches[0]
    first_ms, last_ms = points[0].timestamp_ms, points[1].timestamp_ms
    assert batch["batch_id"].startswith(f"samsara:281474980000011:{first_ms}:{last_ms}:")
    assert [loc["timestamp_ms"] for loc in batch["locations"]] == [first_ms, last_ms]
    assert decode(encode("fleet_location_batch", batch), "fleet_location_batch") == batch
    assert location_batches(points) == batches


def test_fault_batches_are_valid_avro() -> None:
    page = parse(MotiveFaultCodesPage, fixture("motive_docs_examples/fault_codes__docs_example.json"), "motive", "f")
    batch = fault_batches([motive_fault(page.items[0])])[0]
    assert batch["provider_vehicle_id"] == "126207" and batch["vin"] == "JTHBK1GGXF2187111"
    assert decode(encode("fleet_fault_batch", batch), "fleet_fault_batch") == batch


def test_a_changed_fault_gets_a_new_batch_id_and_a_resent_one_the_same() -> None:
    page = parse(MotiveFaultCodesPage, fixture("motive_docs_examples/fault_codes__docs_example.json"), "motive", "f")
    fault = motive_fault(page.items[0])
    closed = dataclasses.replace(fault, status="closed" if fault.status != "closed" else "open")
    assert fault_batches([fault])[0]["batch_id"] == fault_batches([fault])[0]["batch_id"]
    assert fault_batches([closed])[0]["batch_id"] != fault_batches([fault])[0]["batch_id"]
