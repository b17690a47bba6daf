"""Local fakes of the Motive and Samsara APIs, for the demo and the integration tests.

`start_fake("motive" | "samsara", vehicles=.., seed=..)` serves a deterministic synthetic fleet over real
HTTP on 127.0.0.1 (stdlib ThreadingHTTPServer, port chosen by the OS) and returns `(url, controller)`.
Responses have the providers' real shapes (envelopes, key names, pagination blocks, error bodies; see
tests/data/fleet/), with their behaviour: Motive offset pages and per-vehicle date-range history,
Samsara cursor pages that may end on an empty page, stat types limited to 3 per call, fixed 50-record
assignment pages. The controller checks auth (401 bodies as documented), rate limits per token (429 with
a fractional `Retry-After`), fails a configurable share of requests with 5xx (plain-text bodies, as
Samsara's load balancer does), can be taken down for a while, and drives the fleet's clock.

The fleet is a pure function of time: each vehicle drives loops (14 min driving, 3 idle, 3 off, every 20
minutes), changes driver every 4 hours, and some vehicles raise an engine fault for 40 minutes of every
2 hours. A share of points can be made to arrive late. `ground_truth(start, end)` is the set of
(vehicle id, timestamp ms) a complete poll must publish.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fleetstream.producers.fleet.ratelimit import TokenBucket

__all__ = ["FakeController", "FakeFleet", "FakePoint", "start_fake"]

CYCLE_S = 1200
DRIVING_S = 840
IDLE_END_S = 1020
SHIFT_S = 4 * 3600
FAULT_BLOCK_S = 2 * 3600
FAULT_START_S, FAULT_END_S = 30 * 60, 70 * 60
ODOMETER_EVERY_S = 300
FAULT_SNAPSHOT_EVERY_S = 300
LOOP_RADIUS_MILES = 5.0
KMH_PER_MPH = 1 / 0.621371
METERS_PER_MILE = 1609.344
SAMSARA_STAT_TYPES = frozenset({"gps", "engineStates", "obdOdometerMeters", "faultCodes", "fuelPercents",
                                "engineRpm"})


def _ms(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _iso(ms: int, millis: bool) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


def _unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (stable across runs, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class FakeVehicle:
    index: int
    id: str
    name: str
    vin: str
    speed_mph: float
    phase_s: int
    offset_ms: int
    center: tuple[float, float]
    base_odometer_miles: float
    metric_units: bool
    has_faults: bool


@dataclass(frozen=True)
class FakeDriver:
    id: str
    first_name: str
    last_name: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True)
class FakePoint:
    vehicle: FakeVehicle
    timestamp_ms: int
    latitude: float
    longitude: float
    heading_degrees: float
    speed_mph: float
    engine_state: str
    odometer_miles: float
    driver: FakeDriver
    visible_ms: int


class FakeFleet:
    """The synthetic fleet: vehicles, drivers, positions, engine states, odometers, faults, by time."""

    def __init__(self, provider: str, vehicles: int, seed: int, origin: datetime, period_s: float,
                 late_fraction: float, late_by_s: float):
        self.provider = provider
        self.seed = seed
        self.origin_ms = _ms(origin)
        self.period_ms = int(period_s * 1000)
        self.late_fraction = late_fraction
        self.late_by_ms = int(late_by_s * 1000)
        rng = random.Random(seed)
        self.vehicles = [self._vehicle(index, rng) for index in range(vehicles)]
        self.by_id = {vehicle.id: vehicle for vehicle in self.vehicles}
        self.drivers = [FakeDriver(id=str(700000 + seed * 1000 + n) if provider == "motive" else str(51000000 + n),
                                   first_name="Synthetic", last_name=f"Driver{n:03d}") for n in range(2 * vehicles)]

    def _vehicle(self, index: int, rng: random.Random) -> FakeVehicle:
        motive = self.provider == "motive"
        offset_ms = rng.randrange(0, self.period_ms)
        return FakeVehicle(
            index=index,
            id=str(500000 + index) if motive else str(281474980000000 + index),
            name=f"{index + 1:06d}" if motive else f"Truck {index + 101}",
            vin=f"4SYNTHV1N{index + 1:08d}",
            speed_mph=round(rng.uniform(25.0, 60.0), 1),
            phase_s=rng.randrange(0, CYCLE_S),
            offset_ms=offset_ms - offset_ms % 1000 if motive else offset_ms,  # Motive times are whole seconds
            center=(round(rng.uniform(30.0, 45.0), 4), round(rng.uniform(-110.0, -80.0), 4)),
            base_odometer_miles=round(rng.uniform(10_000, 300_000), 1),
            metric_units=motive and index % 4 == 3,
            has_faults=index % 3 == 0,
        )

    # ------------------------------------------------------------ state at a time

    def engine_state(self, vehicle: FakeVehicle, time_ms: int) -> str:
        phase_s = (time_ms // 1000 + vehicle.phase_s) % CYCLE_S
        return "On" if phase_s < DRIVING_S else "Idle" if phase_s < IDLE_END_S else "Off"

    def odometer_miles(self, vehicle: FakeVehicle, time_ms: int) -> float:
        """The base reading plus the distance driven since the fleet's origin."""
        def driven_s(at_ms: int) -> float:
            cycles, phase_s = divmod(at_ms / 1000 + vehicle.phase_s, CYCLE_S)
            return cycles * DRIVING_S + min(phase_s, DRIVING_S)

        return vehicle.base_odometer_miles + (driven_s(time_ms) - driven_s(self.origin_ms)) * vehicle.speed_mph / 3600

    def driver_at(self, vehicle: FakeVehicle, time_ms: int) -> FakeDriver:
        shift = time_ms // 1000 // SHIFT_S
        return self.drivers[2 * vehicle.index + shift % 2]

    def point(self, vehicle: FakeVehicle, sample: int) -> FakePoint:
        time_ms = self.origin_ms + sample * self.period_ms + vehicle.offset_ms
        miles = self.odometer_miles(vehicle, time_ms)
        angle = (miles - vehicle.base_odometer_miles) / LOOP_RADIUS_MILES
        lat0, lon0 = vehicle.center
        latitude = lat0 + LOOP_RADIUS_MILES / 69.0 * math.sin(angle)
        longitude = lon0 + LOOP_RADIUS_MILES / (69.0 * math.cos(math.radians(lat0))) * math.cos(angle)
        state = self.engine_state(vehicle, time_ms)
        late = _unit_hash(self.seed, vehicle.id, sample) < self.late_fraction
        return FakePoint(vehicle=vehicle, timestamp_ms=time_ms, latitude=round(latitude, 6),
                         longitude=round(longitude, 6), heading_degrees=round((90 - math.degrees(angle)) % 360, 1),
                         speed_mph=vehicle.speed_mph if state == "On" else 0.0, engine_state=state,
                         odometer_miles=miles, driver=self.driver_at(vehicle, time_ms),
                         visible_ms=time_ms + (self.late_by_ms if late else 0))

    def points(self, vehicle: FakeVehicle, start_ms: int, end_ms: int, now_ms: int) -> Iterator[FakePoint]:
        """Positions in [start, end) already visible at `now` (no points while the engine is off)."""
        first = max(0, math.ceil((start_ms - self.origin_ms - vehicle.offset_ms) / self.period_ms))
        sample = first
        while True:
            point = self.point(vehicle, sample)
            if point.timestamp_ms >= min(end_ms, now_ms + 1):
                return
            if point.engine_state != "Off" and point.visible_ms <= now_ms and point.timestamp_ms >= start_ms:
                yield point
            sample += 1

    def engine_changes(self, vehicle: FakeVehicle, start_ms: int, end_ms: int) -> list[tuple[int, str]]:
        """Engine-state readings (Samsara reports a state when it changes) in [start, end)."""
        changes = []
        first_s = start_ms // 1000 - (start_ms // 1000 + vehicle.phase_s) % CYCLE_S
        for cycle_start_s in range(first_s, end_ms // 1000 + 1, CYCLE_S):
            for offset_s, state in ((0, "On"), (DRIVING_S, "Idle"), (IDLE_END_S, "Off")):
                time_ms = (cycle_start_s + offset_s) * 1000
                if start_ms <= time_ms < end_ms and time_ms >= self.origin_ms:
                    changes.append((time_ms, state))
        return changes

    def odometer_readings(self, vehicle: FakeVehicle, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        first_s = math.ceil(max(start_ms, self.origin_ms) / 1000 / ODOMETER_EVERY_S) * ODOMETER_EVERY_S
        readings = []
        for time_s in range(first_s, math.ceil(end_ms / 1000), ODOMETER_EVERY_S):
            if time_s * 1000 < end_ms and self.engine_state(vehicle, time_s * 1000) != "Off":
                readings.append((time_s * 1000, round(self.odometer_miles(vehicle, time_s * 1000) * METERS_PER_MILE)))
        return readings

    def fault_episodes(self, vehicle: FakeVehicle, until_ms: int) -> list[tuple[int, int, int]]:
        """(episode number, start ms, end ms) of the vehicle's faults that began by `until`."""
        if not vehicle.has_faults:
            return []
        episodes = []
        first_block = self.origin_ms // 1000 // FAULT_BLOCK_S
        for block in range(first_block, until_ms // 1000 // FAULT_BLOCK_S + 1):
            start_ms = (block * FAULT_BLOCK_S + FAULT_START_S) * 1000
            if self.origin_ms <= start_ms <= until_ms:
                episodes.append((block, start_ms, (block * FAULT_BLOCK_S + FAULT_END_S) * 1000))
        return episodes

    def ground_truth(self, start_ms: int, end_ms: int, now_ms: int) -> set[tuple[str, int]]:
        return {(vehicle.id, point.timestamp_ms) for vehicle in self.vehicles
                for point in self.points(vehicle, start_ms, end_ms, now_ms)}


class FakeController:
    """Drives one fake API: its clock, failures, rate limit and counters. Thread-safe."""

    def __init__(self, provider: str, fleet: FakeFleet, token: str, *, rate_per_s: float, burst: int,
                 error_rate: float, page_size: int, seed: int):
        self.provider = provider
        self.fleet = fleet
        self.token = token
        self.error_rate = error_rate
        self.page_size = page_size
        self.url = ""
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(seed ^ 0x5EED)
        self._bucket = TokenBucket(rate_per_s, burst)
        self._frozen_ms: int | None = None
        self._down_until_s = 0.0
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ clock

    def now(self) -> datetime:
        """The fleet's current time: frozen (tests) or the wall clock."""
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def now_ms(self) -> int:
        with self._lock:
            return self._frozen_ms if self._frozen_ms is not None else int(time.time() * 1000)

    def set_now(self, when: datetime) -> None:
        with self._lock:
            self._frozen_ms = _ms(when)

    def advance(self, seconds: float) -> None:
        with self._lock:
            base = self._frozen_ms if self._frozen_ms is not None else int(time.time() * 1000)
            self._frozen_ms = base + int(seconds * 1000)

    # ------------------------------------------------------------ failures

    def down_for(self, seconds: float) -> None:
        """Answer every request with 503 for `seconds` of real time."""
        with self._lock:
            self._down_until_s = time.monotonic() + seconds

    def set_down(self, down: bool) -> None:
        with self._lock:
            self._down_until_s = float("inf") if down else 0.0

    @property
    def is_down(self) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until_s

    def set_rate_limit(self, rate_per_s: float, burst: int) -> None:
        with self._lock:
            self._bucket = TokenBucket(rate_per_s, burst)

    def _roll_failure(self) -> bool:
        with self._lock:
            return self._rng.random() < self.error_rate

    def _rate_wait_s(self) -> float:
        with self._lock:
            bucket = self._bucket
        return bucket.try_acquire()

    def ground_truth(self, start: datetime, end: datetime) -> set[tuple[str, int]]:
        """(vehicle id, timestamp ms) of every point in [start, end) visible now."""
        return self.fleet.ground_truth(_ms(start), _ms(end), self.now_ms())

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# ---------------------------------------------------------------- HTTP plumbing


class _HttpError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _request_id() -> str:
    return f"req-fake-{random.getrandbits(48):012x}"


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return int(json.loads(base64.urlsafe_b64decode(padded))["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _HttpError(400, {"message": "Invalid value for 'after' parameter", "requestId": _request_id()}) from exc


def _rfc3339_ms(value: str | None, name: str) -> int:
    if not value:
        raise _HttpError(400, {"message": f"{name} is required", "requestId": _request_id()})
    try:
        return _ms(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise _HttpError(400, {"message": f"Invalid {name}: {value}", "requestId": _request_id()}) from exc


class _Api:
    """Routes one provider's requests; subclasses implement the endpoints."""

    def __init__(self, controller: FakeController):
        self.c = controller
        self.fleet = controller.fleet

    def authorized(self, headers: Any) -> bool:
        raise NotImplementedError

    def unauthorized_body(self) -> Any:
        raise NotImplementedError

    def rate_limited_body(self) -> Any:
        raise NotImplementedError

    def route(self, path: str, query: dict[str, str]) -> Any:
        raise NotImplementedError


class _MotiveApi(_Api):
    def authorized(self, headers: Any) -> bool:
        return bool(headers.get("X-Api-Key") == self.c.token)

    def unauthorized_body(self) -> Any:
        return {"error_message": "invalid API key"}

    def rate_limited_body(self) -> Any:
        return {"error_message": "Too many requests, please retry later"}

    def route(self, path: str, query: dict[str, str]) -> Any:
        now_ms = self.c.now_ms()
        if path == "/v1/vehicles":
            return self._page("vehicles", "vehicle", [self._vehicle(v, now_ms) for v in self.fleet.vehicles], query)
        if path == "/v1/users":
            return self._page("users", "user", [self._user(d) for d in self.fleet.drivers], query)
        if path == "/v1/vehicle_locations":
            return self._page("vehicles", "vehicle", [self._latest(v, now_ms) for v in self.fleet.vehicles], query)
        if path == "/v1/fault_codes":
            faults = [self._fault(v, episode, now_ms) for v in self.fleet.vehicles
                      for episode in self.fleet.fault_episodes(v, now_ms)]
            return self._page("fault_codes", "fault_code", faults, query)
        if path.startswith("/v3/vehicle_locations/"):
            return self._history(path.rsplit("/", 1)[1], query, now_ms)
        raise _HttpError(404, {"error_message": "Not Found"})

    def _page(self, key: str, item_key: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        try:
            page_no = int(query.get("page_no", "1"))
            per_page = min(int(query.get("per_page", "25")), 100)
        except ValueError as exc:
            raise _HttpError(400, {"error_message": "page_no and per_page must be integers"}) from exc
        if page_no < 1 or per_page < 1:
            raise _HttpError(400, {"error_message": "page_no and per_page must be positive"})
        chunk = items[(page_no - 1) * per_page: page_no * per_page]
        return {key: [{item_key: item} for item in chunk],
                "pagination": {"per_page": per_page, "page_no": page_no, "total": len(items)}}

    def _driver(self, driver: FakeDriver) -> dict[str, Any]:
        return {"id": int(driver.id), "first_name": driver.first_name, "last_name": driver.last_name,
                "username": f"synthetic.{driver.last_name.lower()}", "email": None,
                "driver_company_id": f"{driver.id}-SYN", "status": "active", "role": "driver"}

    def _user(self, driver: FakeDriver) -> dict[str, Any]:
        return {**self._driver(driver), "phone": None, "time_zone": "UTC", "metric_units": False,
                "created_at": _iso(self.fleet.origin_ms, False), "updated_at": _iso(self.fleet.origin_ms, False)}

    def _vehicle(self, vehicle: FakeVehicle, now_ms: int) -> dict[str, Any]:
        return {"id": int(vehicle.id), "company_id": 7000001, "number": vehicle.name, "status": "active",
                "ifta": True, "vin": vehicle.vin, "make": "Kenworth", "model": "T680", "year": "2022",
                "license_plate_state": "TX", "license_plate_number": f"SYN{vehicle.index:04d}",
                "metric_units": vehicle.metric_units, "fuel_type": "diesel", "group_ids": [],
                "created_at": _iso(self.fleet.origin_ms, False), "updated_at": _iso(self.fleet.origin_ms, False),
                "eld_device": {"id": 8800000 + vehicle.index, "identifier": f"SYNELD{vehicle.index:05d}",
                               "model": "lbb-3.6ca"},
                "current_driver": self._driver(self.fleet.driver_at(vehicle, now_ms))}

    def _location(self, point: FakePoint) -> dict[str, Any]:
        factor = KMH_PER_MPH if point.vehicle.metric_units else 1.0
        return {"id": f"{_unit_hash(point.vehicle.id, point.timestamp_ms):.16f}"[2:18],
                "located_at": _iso(point.timestamp_ms, False), "lat": point.latitude, "lon": point.longitude,
                "type": "breadcrumb" if point.engine_state == "On" else "vehicle_stopped",
                "description": f"{point.vehicle.index + 1} mi N of Synthetic City, TX",
                "speed": round(point.speed_mph * factor, 2), "bearing": point.heading_degrees,
                "battery_voltage": 13.8, "odometer": round(point.odometer_miles * factor, 3),
                "true_odometer": round(point.odometer_miles * factor, 3), "engine_hours": None,
                "true_engine_hours": None, "fuel": None, "driver": self._driver(point.driver),
                "eld_device": {"id": 8800000 + point.vehicle.index, "identifier": f"SYNELD{point.vehicle.index:05d}",
                               "model": "lbb-3.6ca"}}

    def _latest(self, vehicle: FakeVehicle, now_ms: int) -> dict[str, Any]:
        recent = list(self.fleet.points(vehicle, now_ms - 2 * CYCLE_S * 1000, now_ms + 1, now_ms))
        body = self._vehicle(vehicle, now_ms)
        body["current_location"] = self._location(recent[-1]) if recent else None
        return body

    def _fault(self, vehicle: FakeVehicle, episode: tuple[int, int, int], now_ms: int) -> dict[str, Any]:
        block, start_ms, end_ms = episode
        closed = end_ms <= now_ms
        obd = vehicle.index % 2 == 0
        return {"id": int(vehicle.id) * 1000 + block % 1000, "code": "P0087" if obd else "3031",
                "code_label": "P0087" if obd else "SPN 3031",
                "code_description": "Fuel Rail/System Pressure - Too Low" if obd else "System Diagnostic Code #1",
                "source_address_label": "Engine #1", "status": "closed" if closed else "open",
                "first_observed_at": _iso(start_ms, False),
                "last_observed_at": _iso(end_ms if closed else now_ms - now_ms % 60000, False),
                "type": "constant", "fmi": None if obd else 9, "num_observations": 8, "source_address": "0",
                "is_sid": False, "network": "obdii" if obd else "j1939",
                "eld_device": {"id": 8800000 + vehicle.index, "identifier": f"SYNELD{vehicle.index:05d}",
                               "model": "lbb-3.6ca"},
                "vehicle": {"id": int(vehicle.id), "number": vehicle.name, "year": "2022", "make": "Kenworth",
                            "model": "T680", "vin": vehicle.vin, "metric_units": vehicle.metric_units}}

    def _history(self, vehicle_id: str, query: dict[str, str], now_ms: int) -> dict[str, Any]:
        vehicle = self.fleet.by_id.get(vehicle_id)
        if vehicle is None:
            raise _HttpError(404, {"error_message": f"Vehicle {vehicle_id} not found"})
        try:
            first = date.fromisoformat(query["start_date"])
            last = date.fromisoformat(query["end_date"])
        except (KeyError, ValueError) as exc:
            raise _HttpError(400, {"error_message": "start_date and end_date are required (YYYY-MM-DD)"}) from exc
        if last < first:
            raise _HttpError(400, {"error_message": "end_date must not be before start_date"})
        if (last - first).days > 92:
            raise _HttpError(400, {"error_message": "Date range cannot be greater than 3 months"})
        start_ms = _ms(datetime(first.year, first.month, first.day, tzinfo=UTC))
        end_ms = _ms(datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1))
        points = self.fleet.points(vehicle, start_ms, end_ms, now_ms)
        return {"vehicle_locations": [{"vehicle_location": self._location(point)} for point in points]}


class _SamsaraApi(_Api):
    def authorized(self, headers: Any) -> bool:
        return bool(headers.get("Authorization") == f"Bearer {self.c.token}")

    def unauthorized_body(self) -> Any:
        return {"message": "Unauthorized", "requestId": _request_id()}

    def rate_limited_body(self) -> Any:
        return {"message": "Exceeded rate limit.", "requestId": _request_id()}

    def route(self, path: str, query: dict[str, str]) -> Any:
        now_ms = self.c.now_ms()
        if path == "/fleet/vehicles":
            return self._page([self._vehicle(v, now_ms) for v in self.fleet.vehicles], query)
        if path == "/fleet/drivers":
            status = query.get("driverActivationStatus", "active")
            if status not in ("active", "deactivated"):
                raise _HttpError(400, {"message": "Invalid value for driverActivationStatus. Can only be 'active' "
                                                  "or 'deactivated'", "requestId": _request_id()})
            drivers = [self._driver(d) for d in self.fleet.drivers] if status == "active" else []
            return self._page(drivers, query)
        if path == "/fleet/driver-vehicle-assignments":
            return self._assignments(query, now_ms)
        if path == "/fleet/vehicles/stats/history":
            return self._history(query, now_ms)
        if path == "/fleet/vehicles/stats":
            return self._latest(query, now_ms)
        raise _HttpError(404, {"message": "Not Found", "requestId": _request_id()})

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], fixed_size: int | None = None
              ) -> dict[str, Any]:
        """A cursor page; like Samsara, a full page promises a next one, which may come back empty."""
        try:
            limit = int(query.get("limit", "512"))
        except ValueError as exc:
            raise _HttpError(400, {"message": "limit must be an integer", "requestId": _request_id()}) from exc
        if not 1 <= limit <= 512:
            raise _HttpError(400, {"message": f"limit must be lesser or equal than 512 but got value {limit}",
                                   "requestId": _request_id()})
        size = fixed_size or min(limit, self.c.page_size)
        offset = _offset(query.get("after"))
        chunk = items[offset: offset + size]
        more = len(chunk) == size
        return {"data": chunk, "pagination": {"endCursor": _cursor(offset + size) if more else "",
                                              "hasNextPage": more}}

    def _external_ids(self, vehicle: FakeVehicle) -> dict[str, str]:
        return {"samsara.serial": f"GSYN{vehicle.index:08d}", "samsara.vin": vehicle.vin}

    def _vehicle(self, vehicle: FakeVehicle, now_ms: int) -> dict[str, Any]:
        driver = self.fleet.driver_at(vehicle, now_ms)
        return {"id": vehicle.id, "name": vehicle.name, "vin": vehicle.vin, "externalIds": self._external_ids(vehicle),
                "gateway": {"serial": f"GSYN-{vehicle.index:04d}", "model": "VG54"},
                "harshAccelerationSettingType": "automatic", "make": "KENWORTH", "model": "T680", "year": "2022",
                "notes": "", "serial": f"GSYN{vehicle.index:08d}", "licensePlate": f"SYN{vehicle.index:04d}",
                "staticAssignedDriver": {"id": driver.id, "name": driver.name}, "tags": [],
                "vehicleRegulationMode": "regulated", "createdAtTime": _iso(self.fleet.origin_ms, False),
                "updatedAtTime": _iso(self.fleet.origin_ms, False)}

    def _driver(self, driver: FakeDriver) -> dict[str, Any]:
        return {"id": driver.id, "name": driver.name, "username": f"synthetic.{driver.last_name.lower()}",
                "driverActivationStatus": "active", "timezone": "America/Chicago",
                "createdAtTime": _iso(self.fleet.origin_ms, True), "updatedAtTime": _iso(self.fleet.origin_ms, True)}

    def _assignments(self, query: dict[str, str], now_ms: int) -> dict[str, Any]:
        if query.get("filterBy") not in ("drivers", "vehicles"):
            raise _HttpError(400, {"message": f'value of filterBy must be one of "drivers", "vehicles" but got value '
                                              f'"{query.get("filterBy", "")}"', "requestId": _request_id()})
        start_ms = _rfc3339_ms(query.get("startTime"), "startTime")
        end_ms = _rfc3339_ms(query.get("endTime"), "endTime")
        items = []
        for vehicle in self.fleet.vehicles:
            for shift in range(start_ms // 1000 // SHIFT_S, end_ms // 1000 // SHIFT_S + 1):
                shift_start_ms, shift_end_ms = shift * SHIFT_S * 1000, (shift + 1) * SHIFT_S * 1000
                if shift_start_ms >= min(end_ms, now_ms + 1) or shift_end_ms <= start_ms:
                    continue
                driver = self.fleet.driver_at(vehicle, shift_start_ms)
                items.append({
                    "driver": {"id": driver.id, "name": driver.name},
                    "vehicle": {"id": vehicle.id, "name": vehicle.name, "externalIds": self._external_ids(vehicle)},
                    "startTime": _iso(shift_start_ms, False),
                    "endTime": _iso(shift_end_ms, False) if shift_end_ms <= now_ms else "",
                    "assignedAtTime": "", "assignmentType": "HOS", "isPassenger": False})
        return self._page(items, query, fixed_size=50)

    def _types(self, query: dict[str, str]) -> list[str]:
        types = [t for t in query.get("types", "").split(",") if t]
        if not types:
            raise _HttpError(400, {"message": "types is required", "requestId": _request_id()})
        if len(types) > 3:
            raise _HttpError(400, {"message": "at most 3 types may be requested at once", "requestId": _request_id()})
        invalid = [t for t in types if t not in SAMSARA_STAT_TYPES]
        if invalid:
            raise _HttpError(400, {"message": f"Invalid stat type(s): {','.join(invalid)}", "requestId": _request_id()})
        return types

    def _gps(self, point: FakePoint) -> dict[str, Any]:
        return {"time": _iso(point.timestamp_ms, True), "latitude": point.latitude, "longitude": point.longitude,
                "headingDegrees": point.heading_degrees, "speedMilesPerHour": point.speed_mph, "isEcuSpeed": True,
                "reverseGeo": {"formattedLocation": f"{point.vehicle.index + 100} Example St, Example City, TX"}}

    def _faults(self, vehicle: FakeVehicle, start_ms: int, end_ms: int, now_ms: int) -> list[dict[str, Any]]:
        snapshots = []
        for _, fault_start_ms, fault_end_ms in self.fleet.fault_episodes(vehicle, now_ms):
            first_s = math.ceil(max(start_ms, fault_start_ms) / 1000 / FAULT_SNAPSHOT_EVERY_S) * FAULT_SNAPSHOT_EVERY_S
            for time_s in range(first_s, math.ceil(min(end_ms, fault_end_ms, now_ms + 1) / 1000),
                                FAULT_SNAPSHOT_EVERY_S):
                snapshots.append(self._fault_snapshot(vehicle, time_s * 1000))
            if start_ms <= fault_end_ms < end_ms and fault_end_ms <= now_ms:  # the reading that clears it
                snapshots.append({"time": _iso(fault_end_ms, True), "canBusType": "CANBUS_J1939_500",
                                  "j1939": {"diagnosticTroubleCodes": []}, "obdii": {"diagnosticTroubleCodes": []}})
        return snapshots

    def _fault_snapshot(self, vehicle: FakeVehicle, time_ms: int) -> dict[str, Any]:
        if vehicle.index % 2 == 0:
            dtc = {"dtcShortCode": "P0087", "dtcDescription": "Fuel Rail/System Pressure - Too Low Bank 1",
                   "dtcId": 135}
            return {"time": _iso(time_ms, True), "canBusType": "CANBUS_OBDII",
                    "obdii": {"checkEngineLightIsOn": True, "diagnosticTroubleCodes": [
                        {"txId": 0, "milStatus": True, "confirmedDtcs": [dtc], "pendingDtcs": [],
                         "permanentDtcs": []}]}}
        return {"time": _iso(time_ms, True), "canBusType": "CANBUS_J1939_500",
                "j1939": {"checkEngineLights": {"emissionsIsOn": True, "protectIsOn": False, "stopIsOn": False,
                                                "warningIsOn": False},
                          "diagnosticTroubleCodes": [{"spnId": 3031, "fmiId": 9, "txId": 0, "milStatus": 1,
                                                      "occurrenceCount": 1, "sourceAddressName": "Engine #1",
                                                      "spnDescription": "System Diagnostic Code #1",
                                                      "fmiDescription": "Voltage Below Normal"}]}}

    def _history(self, query: dict[str, str], now_ms: int) -> dict[str, Any]:
        types = self._types(query)
        start_ms = _rfc3339_ms(query.get("startTime"), "startTime")
        end_ms = _rfc3339_ms(query.get("endTime"), "endTime")
        items = []
        for vehicle in self.fleet.vehicles:
            stats: dict[str, Any] = {}
            if "gps" in types:
                stats["gps"] = [self._gps(p) for p in self.fleet.points(vehicle, start_ms, end_ms, now_ms)]
            if "engineStates" in types:
                stats["engineStates"] = [{"time": _iso(t, True), "value": v} for t, v in
                                         self.fleet.engine_changes(vehicle, start_ms, min(end_ms, now_ms + 1))]
            if "obdOdometerMeters" in types:
                stats["obdOdometerMeters"] = [{"time": _iso(t, True), "value": v} for t, v in
                                              self.fleet.odometer_readings(vehicle, start_ms, min(end_ms, now_ms + 1))]
            if "faultCodes" in types:
                stats["faultCodes"] = self._faults(vehicle, start_ms, end_ms, now_ms)
            stats = {key: value for key, value in stats.items() if value}
            if stats:  # only vehicles with data for a requested type are listed
                items.append({"id": vehicle.id, "name": vehicle.name, "externalIds": self._external_ids(vehicle),
                              **stats})
        return self._page(items, query)

    def _latest(self, query: dict[str, str], now_ms: int) -> dict[str, Any]:
        types = self._types(query)
        items = []
        for vehicle in self.fleet.vehicles:
            stats: dict[str, Any] = {}
            recent = list(self.fleet.points(vehicle, now_ms - 2 * CYCLE_S * 1000, now_ms + 1, now_ms))
            if "gps" in types and recent:
                stats["gps"] = self._gps(recent[-1])
            changes = self.fleet.engine_changes(vehicle, now_ms - CYCLE_S * 1000, now_ms + 1)
            if "engineStates" in types and changes:
                stats["engineState"] = {"time": _iso(changes[-1][0], True), "value": changes[-1][1]}
            readings = self.fleet.odometer_readings(vehicle, now_ms - CYCLE_S * 1000, now_ms + 1)
            if "obdOdometerMeters" in types and readings:
                stats["obdOdometerMeters"] = {"time": _iso(readings[-1][0], True), "value": readings[-1][1]}
            if stats:
                items.append({"id": vehicle.id, "name": vehicle.name, "externalIds": self._external_ids(vehicle),
                              **stats})
        return self._page(items, query)


def _handler(api: _Api) -> type[BaseHTTPRequestHandler]:
    controller = api.c

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(split.query).items()}
            controller.requests[split.path] += 1
            try:
                self._send(200, self._answer(split.path, query))
            except _HttpError as error:
                self._send(error.status, error.body, error.headers)

        def _answer(self, path: str, query: dict[str, str]) -> Any:
            if controller.is_down:
                raise _HttpError(503, "Service Unavailable")
            if not api.authorized(self.headers):
                raise _HttpError(401, api.unauthorized_body())
            wait_s = controller._rate_wait_s()
            if wait_s > 0:
                raise _HttpError(429, api.rate_limited_body(), {"Retry-After": f"{wait_s:.5f}"})
            if controller._roll_failure():
                raise _HttpError(502, "upstream connect error or disconnect/reset before headers")
            return api.route(path, query)

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            controller.statuses[status] += 1
            text = body if isinstance(body, str) else json.dumps(body)
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def start_fake(
    provider: str,
    vehicles: int = 5,
    seed: int = 0,
    *,
    token: str = "fake-token",
    origin: datetime | None = None,
    now: datetime | None = None,
    period_s: float = 30.0,
    late_fraction: float = 0.0,
    late_by_s: float = 120.0,
    rate_per_s: float = 1000.0,
    burst: int = 1000,
    error_rate: float = 0.0,
    page_size: int = 512,
    port: int = 0,
) -> tuple[str, FakeController]:
    """Serve a fake `provider` API on 127.0.0.1 in a background thread; return its base URL and controller.

    `origin` is when the fleet's history begins (default: a day before now); `now` freezes the fleet's
    clock there (default: follow the wall clock). Stop it with `controller.stop()`.
    """
    if provider not in ("motive", "samsara"):
        raise ValueError(f"unknown provider {provider!r}: expected 'motive' or 'samsara'")
    start = now or datetime.now(UTC)
    origin = origin or (start - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    fleet = FakeFleet(provider, vehicles, seed, origin, period_s, late_fraction, late_by_s)
    controller = FakeController(provider, fleet, token, rate_per_s=rate_per_s, burst=burst, error_rate=error_rate,
                                page_size=page_size, seed=seed)
    if now is not None:
        controller.set_now(now)
    api: _Api = _MotiveApi(controller) if provider == "motive" else _SamsaraApi(controller)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(api))
    server.daemon_threads = True
    controller._server = server
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{provider}-api",
                     daemon=True).start()
    controller.url = f"http://127.0.0.1:{server.server_address[1]}"
    return controller.url, controller
