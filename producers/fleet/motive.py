"""The Motive (formerly KeepTruckin) API: vehicles, users, locations and fault codes, unified.

Auth is the `X-Api-Key` header. Lists page by offset (`page_no` from 1, `per_page` at most 100).
Location history is per vehicle, by inclusive calendar dates, at most 3 months a call and without a
pagination block; the dates are interpreted in the company's time zone, which we do not know, so the
range is widened by a day on each side and the answer filtered to the exact window. Motive publishes no
numeric rate limit; the default budget is 60 requests a minute with a burst of 5.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from fleetstream.producers.fleet.http import ApiClient, HttpSettings
from fleetstream.producers.fleet.models import (
    MotiveFaultCode,
    MotiveFaultCodesPage,
    MotiveLatestLocationsPage,
    MotiveLocation,
    MotiveLocationsResponse,
    MotivePagination,
    MotiveUser,
    MotiveUsersPage,
    MotiveVehicle,
    MotiveVehiclesPage,
    parse,
)
from fleetstream.producers.fleet.pagination import MOTIVE_MAX_PER_PAGE, offset_items
from fleetstream.producers.fleet.unify import UnifiedFault, UnifiedLocation, motive_fault, motive_location, to_ms

__all__ = ["MOTIVE_BASE_URL", "MotiveClient", "date_chunks", "motive_settings"]

MOTIVE_BASE_URL = "https://api.gomotive.com"
MAX_HISTORY_DAYS = 89
"""Days per history call, inclusive: three months are never fewer than 89 days (Feb to Apr)."""
DATE_MARGIN_DAYS = 1


def motive_settings(base_url: str = MOTIVE_BASE_URL, **overrides: Any) -> HttpSettings:
    """Motive defaults: 60 requests a minute, burst 5."""
    return HttpSettings(base_url=base_url, **{"rate_per_s": 1.0, "burst": 5, **overrides})


def date_chunks(first: date, last: date, max_days: int = MAX_HISTORY_DAYS) -> list[tuple[date, date]]:
    """Split the inclusive range [first, last] into inclusive ranges of at most `max_days` days."""
    chunks = []
    start = first
    while start <= last:
        end = min(last, start + timedelta(days=max_days - 1))
        chunks.append((start, end))
        start = end + timedelta(days=1)
    return chunks


class MotiveClient:
    """Motive endpoints for the poller: `locations(start, end)` and `faults(start, end)`, plus the lists.

    The vehicle list is cached for `vehicle_refresh_s` (location history needs every vehicle's id, and
    listing them each poll would spend the small rate budget on data that rarely changes).
    """

    provider = "motive"

    def __init__(
        self,
        api_key: SecretStr | str,
        settings: HttpSettings | None = None,
        *,
        vehicle_refresh_s: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.api = ApiClient(self.provider, settings or motive_settings(), "X-Api-Key", api_key,
                             sleep=sleep, clock=clock, rng=rng, transport=transport)
        self.vehicle_refresh_s = vehicle_refresh_s
        self._clock = clock
        self._vehicles: list[MotiveVehicle] | None = None
        self._vehicles_at_s = 0.0

    def __repr__(self) -> str:
        return f"MotiveClient({self.api!r})"

    def close(self) -> None:
        self.api.close()

    # ------------------------------------------------------------ lists

    def _page(self, endpoint: str, path: str, model: type[Any], page_no: int, per_page: int,
              extra: dict[str, str] | None = None) -> tuple[list[Any], MotivePagination | None]:
        body = self.api.get_json(endpoint, path, {"page_no": page_no, "per_page": per_page, **(extra or {})})
        page = parse(model, body, self.provider, endpoint)
        return page.items, page.pagination

    def vehicles(self, per_page: int = MOTIVE_MAX_PER_PAGE) -> list[MotiveVehicle]:
        """Every vehicle (GET /v1/vehicles), all pages."""
        return list(offset_items(
            lambda page_no, size: self._page("vehicles", "/v1/vehicles", MotiveVehiclesPage, page_no, size), per_page))

    def users(self, per_page: int = MOTIVE_MAX_PER_PAGE, role: str | None = None) -> list[MotiveUser]:
        """Every user (GET /v1/users), optionally of one role (`driver`)."""
        extra = {"role": role} if role else None
        return list(offset_items(
            lambda page_no, size: self._page("users", "/v1/users", MotiveUsersPage, page_no, size, extra), per_page))

    def fault_codes(self, per_page: int = MOTIVE_MAX_PER_PAGE) -> list[MotiveFaultCode]:
        """Every engine fault code (GET /v1/fault_codes), open and closed."""
        return list(offset_items(
            lambda page_no, size: self._page("fault_codes", "/v1/fault_codes", MotiveFaultCodesPage, page_no, size),
            per_page))

    def active_vehicles(self) -> list[MotiveVehicle]:
        """Vehicles that can report locations (not deactivated), cached for `vehicle_refresh_s`."""
        now_s = self._clock()
        if self._vehicles is None or now_s - self._vehicles_at_s >= self.vehicle_refresh_s:
            self._vehicles = [vehicle for vehicle in self.vehicles() if vehicle.status != "deactivated"]
            self._vehicles_at_s = now_s
        return self._vehicles

    # ------------------------------------------------------------ locations

    def location_history(self, vehicle_id: int, first: date, last: date) -> list[MotiveLocation]:
        """A vehicle's breadcrumbs for the inclusive dates [first, last], split into 3-month calls."""
        endpoint = "vehicle_locations_v3"
        locations: list[MotiveLocation] = []
        for start_date, end_date in date_chunks(first, last):
            body = self.api.get_json(endpoint, f"/v3/vehicle_locations/{vehicle_id}",
                                     {"start_date": start_date.isoformat(), "end_date": end_date.isoformat()})
            locations.extend(parse(MotiveLocationsResponse, body, self.provider, endpoint).items)
        return locations

    def locations(self, start: datetime, end: datetime) -> list[UnifiedLocation]:
        """Unified locations of every active vehicle with `start <= located_at < end`."""
        start_ms, end_ms = to_ms(start), to_ms(end)
        first = (start - timedelta(days=DATE_MARGIN_DAYS)).date()
        last = (end + timedelta(days=DATE_MARGIN_DAYS)).date()
        unified = []
        for vehicle in self.active_vehicles():
            for location in self.location_history(vehicle.id, first, last):
                point = motive_location(vehicle, location)
                if start_ms <= point.timestamp_ms < end_ms:
                    unified.append(point)
        return unified

    def latest_locations(self, per_page: int = MOTIVE_MAX_PER_PAGE) -> list[UnifiedLocation]:
        """The last known location of each active vehicle (GET /v1/vehicle_locations), unified."""
        vehicles = offset_items(lambda page_no, size: self._page(
            "vehicle_locations", "/v1/vehicle_locations", MotiveLatestLocationsPage, page_no, size), per_page)
        unified = []
        for vehicle in vehicles:
            if vehicle.current_location is None:
                continue
            current = vehicle.current_location
            location = MotiveLocation(located_at=current.located_at, lat=current.lat, lon=current.lon,
                                      type=current.type, description=current.description, speed=current.speed,
                                      bearing=current.bearing, odometer=current.odometer,
                                      true_odometer=current.true_odometer, driver=vehicle.current_driver)
            unified.append(motive_location(vehicle, location))
        return unified

    # ------------------------------------------------------------ faults

    def faults(self, start: datetime, end: datetime) -> list[UnifiedFault]:
        """Faults last observed (or first observed, if never again) in [start, end)."""
        start_ms, end_ms = to_ms(start), to_ms(end)
        unified = [motive_fault(fault) for fault in self.fault_codes()]
        return [fault for fault in unified if start_ms <= fault.observed_ms < end_ms]
