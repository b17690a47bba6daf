"""One location and fault shape for every provider, and the Avro batch records built from them.

The unified location is fleet_telemetry_hub's 14 columns (../shared/contracts/fleet-apis.md); the rules
that map each provider onto it live here as plain functions, so they are tested without HTTP. Batches
are `fleet_location_batch` / `fleet_fault_batch` v1 dicts: one message per vehicle per poll, with a
`batch_id` that is the same whenever the same points are published again.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetstream.producers.fleet.models import (
    MotiveDriver,
    MotiveFaultCode,
    MotiveLocation,
    MotiveVehicle,
    SamsaraAssignment,
    SamsaraFaultCodes,
    SamsaraVehicleStats,
)

__all__ = [
    "KMH_TO_MPH",
    "METERS_PER_MILE",
    "ODOMETER_MATCH_WINDOW_MS",
    "UnifiedFault",
    "UnifiedLocation",
    "fault_batches",
    "location_batches",
    "motive_engine_state",
    "motive_fault",
    "motive_location",
    "samsara_faults",
    "samsara_locations",
    "to_ms",
]

KMH_TO_MPH = 0.621371
METERS_PER_MILE = 1609.344
ODOMETER_MATCH_WINDOW_MS = 30 * 60 * 1000
MOVING_THRESHOLD_MPH = 3.0

_OFF_TYPES = frozenset({"ignition_off", "engine_stop", "engine_off"})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(when: datetime) -> int:
    """Epoch milliseconds of an aware datetime (integer arithmetic: no float rounding of microseconds)."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class UnifiedLocation:
    """One position of one vehicle, the same for every provider; `key` is the dedup identity."""

    provider: str
    provider_vehicle_id: str
    vin: str | None
    fleet_number: str | None
    timestamp_ms: int
    latitude: float
    longitude: float
    speed_mph: float | None = None
    heading_degrees: float | None = None
    engine_state: str | None = None
    driver_id: str | None = None
    driver_name: str | None = None
    location_description: str | None = None
    odometer_miles: float | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return self.provider, self.provider_vehicle_id, self.timestamp_ms

    def avro(self) -> dict[str, Any]:
        """The `FleetLocation` item of a fleet_location_batch."""
        return {
            "timestamp_ms": self.timestamp_ms, "latitude": self.latitude, "longitude": self.longitude,
            "speed_mph": self.speed_mph, "heading_degrees": self.heading_degrees, "engine_state": self.engine_state,
            "driver_id": self.driver_id, "driver_name": self.driver_name,
            "location_description": self.location_description, "odometer_miles": self.odometer_miles,
        }


@dataclass(frozen=True, slots=True)
class UnifiedFault:
    """One engine fault of one vehicle: an episode from first to last observation, open or closed."""

    provider: str
    provider_vehicle_id: str
    vin: str | None
    fleet_number: str | None
    fault_id: str
    code: str
    description: str | None
    status: str
    first_observed_ms: int
    last_observed_ms: int | None
    source_address: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str, int, int | None]:
        """A fault is republished only when its status or observation span changed."""
        return (self.provider, self.provider_vehicle_id, self.fault_id, self.status, self.first_observed_ms,
                self.last_observed_ms)

    @property
    def observed_ms(self) -> int:
        return self.last_observed_ms if self.last_observed_ms is not None else self.first_observed_ms

    def avro(self) -> dict[str, Any]:
        return {
            "fault_id": self.fault_id, "code": self.code, "description": self.description, "status": self.status,
            "first_observed_ms": self.first_observed_ms, "last_observed_ms": self.last_observed_ms,
            "source_address": self.source_address,
        }


# ---------------------------------------------------------------- Motive


def motive_engine_state(location_type: str | None, speed_mph: float | None) -> str | None:
    """Motive has no engine-state field: stopped types → Idle, ignition/engine off → Off, > 3 mph → On.

    A breadcrumb at walking pace or less counts as Idle (the ELD only reports with ignition on);
    without a speed and without a telling type the state is unknown.
    """
    kind = (location_type or "").lower()
    if "stopped" in kind:
        return "Idle"
    if kind in _OFF_TYPES:
        return "Off"
    if speed_mph is None:
        return "On" if kind in ("vehicle_moving", "gps_moving") else None
    return "On" if speed_mph > MOVING_THRESHOLD_MPH else "Idle"


def _motive_driver(driver: MotiveDriver | None) -> tuple[str | None, str | None]:
    if driver is None:
        return None, None
    return str(driver.id), driver.full_name


def motive_location(vehicle: MotiveVehicle, location: MotiveLocation) -> UnifiedLocation:
    """One Motive breadcrumb, unified. Metric vehicles report km/h and km: both become miles."""
    factor = KMH_TO_MPH if vehicle.metric_units else 1.0
    speed_mph = location.speed * factor if location.speed is not None else None
    odometer = location.true_odometer if location.true_odometer is not None else location.odometer
    driver_id, driver_name = _motive_driver(location.driver)
    return UnifiedLocation(
        provider="motive", provider_vehicle_id=str(vehicle.id), vin=vehicle.vin, fleet_number=vehicle.number,
        timestamp_ms=to_ms(location.located_at), latitude=location.lat, longitude=location.lon,
        speed_mph=speed_mph, heading_degrees=location.bearing,
        engine_state=motive_engine_state(location.type, speed_mph),
        driver_id=driver_id, driver_name=driver_name, location_description=location.description,
        odometer_miles=odometer * factor if odometer is not None else None,
    )


def motive_fault(fault: MotiveFaultCode) -> UnifiedFault:
    return UnifiedFault(
        provider="motive", provider_vehicle_id=str(fault.vehicle.id), vin=fault.vehicle.vin,
        fleet_number=fault.vehicle.number, fault_id=str(fault.id), code=fault.code,
        description=fault.code_description, status=fault.status, first_observed_ms=to_ms(fault.first_observed_at),
        last_observed_ms=to_ms(fault.last_observed_at) if fault.last_observed_at else None,
        source_address=fault.source_address,
    )


# ---------------------------------------------------------------- Samsara


class _Timeline:
    """Sorted (time_ms, value) readings with the two lookups the Samsara rules need."""

    def __init__(self, readings: Iterable[tuple[int, Any]]):
        ordered = sorted(readings, key=lambda reading: reading[0])
        self.times_ms = [time_ms for time_ms, _ in ordered]
        self.values = [value for _, value in ordered]

    def at_or_before(self, time_ms: int) -> Any:
        index = bisect.bisect_right(self.times_ms, time_ms) - 1
        return self.values[index] if index >= 0 else None

    def nearest_within(self, time_ms: int, window_ms: int) -> Any:
        index = bisect.bisect_left(self.times_ms, time_ms)
        best: tuple[int, Any] | None = None
        for candidate in (index - 1, index):
            if 0 <= candidate < len(self.times_ms):
                distance_ms = abs(self.times_ms[candidate] - time_ms)
                if distance_ms <= window_ms and (best is None or distance_ms < best[0]):
                    best = (distance_ms, self.values[candidate])
        return best[1] if best else None


class AssignmentIndex:
    """Which driver drove a vehicle at a time, from driver-vehicle assignments (passengers excluded)."""

    def __init__(self, assignments: Iterable[SamsaraAssignment]):
        self._by_vehicle: dict[str, list[tuple[int, int | None, str, str | None]]] = defaultdict(list)
        for item in assignments:
            if item.isPassenger:
                continue
            end_ms = to_ms(item.endTime) if item.endTime else None
            self._by_vehicle[item.vehicle.id].append((to_ms(item.startTime), end_ms, item.driver.id, item.driver.name))
        for intervals in self._by_vehicle.values():
            intervals.sort(key=lambda interval: interval[0])

    def driver_at(self, vehicle_id: str, time_ms: int) -> tuple[str | None, str | None]:
        """The latest-starting assignment covering `time_ms` ([start, end), open-ended if no end)."""
        covering = [(driver_id, name) for start_ms, end_ms, driver_id, name in self._by_vehicle.get(vehicle_id, [])
                    if start_ms <= time_ms and (end_ms is None or time_ms < end_ms)]
        return covering[-1] if covering else (None, None)


def samsara_locations(stats: SamsaraVehicleStats, assignments: AssignmentIndex) -> list[UnifiedLocation]:
    """A vehicle's gps readings, each joined with the engine state, odometer and driver at its time.

    Engine state: the latest engineStates value at or before the gps time. Odometer: the nearest
    obdOdometerMeters reading within 30 minutes, in miles. Driver: the assignment covering the time.
    """
    engine = _Timeline((to_ms(reading.time), reading.value) for reading in stats.engineStates)
    odometer = _Timeline((to_ms(reading.time), reading.value) for reading in stats.obdOdometerMeters)
    unified = []
    for gps in stats.gps:
        time_ms = to_ms(gps.time)
        meters = odometer.nearest_within(time_ms, ODOMETER_MATCH_WINDOW_MS)
        driver_id, driver_name = assignments.driver_at(stats.id, time_ms)
        unified.append(UnifiedLocation(
            provider="samsara", provider_vehicle_id=stats.id, vin=stats.samsara_vin, fleet_number=stats.name,
            timestamp_ms=time_ms, latitude=gps.latitude, longitude=gps.longitude, speed_mph=gps.speedMilesPerHour,
            heading_degrees=gps.headingDegrees, engine_state=engine.at_or_before(time_ms),
            driver_id=driver_id, driver_name=driver_name,
            location_description=gps.reverseGeo.formattedLocation if gps.reverseGeo else None,
            odometer_miles=meters / METERS_PER_MILE if meters is not None else None,
        ))
    return unified


def _snapshot_codes(reading: SamsaraFaultCodes) -> dict[str, tuple[str, str | None, str | None]]:
    """fault_id → (code, description, source) of every code active in one faultCodes snapshot."""
    codes: dict[str, tuple[str, str | None, str | None]] = {}
    for j1939 in reading.j1939.diagnosticTroubleCodes if reading.j1939 else []:
        code = f"SPN {j1939.spnId} FMI {j1939.fmiId}"
        description = " - ".join(part for part in (j1939.spnDescription, j1939.fmiDescription) if part) or None
        codes[f"j1939:{j1939.txId}:{j1939.spnId}:{j1939.fmiId}"] = (code, description, j1939.sourceAddressName)
    for ecu in reading.obdii.diagnosticTroubleCodes if reading.obdii else []:
        for dtc in [*ecu.confirmedDtcs, *ecu.permanentDtcs, *ecu.pendingDtcs]:
            codes.setdefault(f"obdii:{ecu.txId}:{dtc.dtcShortCode}",
                             (dtc.dtcShortCode, dtc.dtcDescription, str(ecu.txId) if ecu.txId is not None else None))
    for oem in reading.oem.diagnosticTroubleCodes if reading.oem else []:
        codes[f"oem:{oem.codeSource}:{oem.codeIdentifier}"] = (oem.codeIdentifier, oem.codeDescription, oem.codeSource)
    return codes


def samsara_faults(stats: SamsaraVehicleStats) -> list[UnifiedFault]:
    """Samsara reports snapshots of active codes; fold them into episodes, in time order.

    An episode runs from the first to the last snapshot listing the code without a gap; a snapshot
    without it closes the episode (its last observation is when it was last seen), and a reappearance
    starts a new one. Episodes still listed in the latest snapshot are `open`.
    """
    active: dict[str, list[Any]] = {}
    episodes: list[UnifiedFault] = []
    for reading in sorted(stats.faultCodes, key=lambda reading: reading.time):
        time_ms = to_ms(reading.time)
        codes = _snapshot_codes(reading)
        for fault_id in [fault_id for fault_id in active if fault_id not in codes]:
            first_ms, last_ms, details = active.pop(fault_id)
            episodes.append(_samsara_episode(stats, fault_id, first_ms, last_ms, details, "closed"))
        for fault_id, current in codes.items():
            active.setdefault(fault_id, [time_ms, time_ms, current])[1] = time_ms
    episodes.extend(_samsara_episode(stats, fault_id, first_ms, last_ms, details, "open")
                    for fault_id, (first_ms, last_ms, details) in active.items())
    return episodes


def _samsara_episode(stats: SamsaraVehicleStats, fault_id: str, first_ms: int, last_ms: int,
                     details: tuple[str, str | None, str | None], status: str) -> UnifiedFault:
    return UnifiedFault(
        provider="samsara", provider_vehicle_id=stats.id, vin=stats.samsara_vin, fleet_number=stats.name,
        fault_id=fault_id, code=details[0], description=details[1], status=status, first_observed_ms=first_ms,
        last_observed_ms=last_ms, source_address=details[2])


# ---------------------------------------------------------------- batches


def location_batches(locations: Iterable[UnifiedLocation]) -> list[dict[str, Any]]:
    """fleet_location_batch records: one per vehicle, points in time order, stable batch_id."""
    by_vehicle: dict[tuple[str, str], list[UnifiedLocation]] = defaultdict(list)
    for location in locations:
        by_vehicle[(location.provider, location.provider_vehicle_id)].append(location)
    batches = []
    for (provider, vehicle_id), points in sorted(by_vehicle.items()):
        points.sort(key=lambda point: point.timestamp_ms)
        batches.append(_batch_header(provider, vehicle_id, points, points[0].timestamp_ms, points[-1].timestamp_ms)
                       | {"locations": [point.avro() for point in points]})
    return batches


def fault_batches(faults: Iterable[UnifiedFault]) -> list[dict[str, Any]]:
    """fleet_fault_batch records: one per vehicle, faults ordered by observation time."""
    by_vehicle: dict[tuple[str, str], list[UnifiedFault]] = defaultdict(list)
    for fault in faults:
        by_vehicle[(fault.provider, fault.provider_vehicle_id)].append(fault)
    batches = []
    for (provider, vehicle_id), items in sorted(by_vehicle.items()):
        items.sort(key=lambda fault: (fault.observed_ms, fault.fault_id))
        batches.append(_batch_header(provider, vehicle_id, items, items[0].observed_ms, items[-1].observed_ms)
                       | {"faults": [fault.avro() for fault in items]})
    return batches


def _batch_header(provider: str, vehicle_id: str, items: Sequence[UnifiedLocation | UnifiedFault],
                  first_ms: int, last_ms: int) -> dict[str, Any]:
    """Identity fields of a batch; vin and fleet number from the newest item that has them.

    The batch id ends in a digest of the items' content: the same points published again get the same id
    (downstream stores them once), while a changed item (a fault that closed, a later last_observed) gets a
    new one even when its times are unchanged.
    """
    vin = next((item.vin for item in reversed(items) if item.vin), None)
    fleet_number = next((item.fleet_number for item in reversed(items) if item.fleet_number), None)
    digest = hashlib.blake2b(json.dumps([item.avro() for item in items], sort_keys=True).encode(),
                             digest_size=8).hexdigest()
    return {"batch_id": f"{provider}:{vehicle_id}:{first_ms}:{last_ms}:{digest}", "provider": provider,
            "provider_vehicle_id": vehicle_id, "vin": vin, "fleet_number": fleet_number}
