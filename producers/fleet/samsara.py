"""The Samsara API: vehicles, drivers, assignments, vehicle stats (history and latest), unified.

Auth is `Authorization: Bearer <token>`. Lists page by cursor (`after=endCursor` while `hasNextPage`).
Vehicle stats take at most 3 `types` a call: locations ask for gps, engineStates and
obdOdometerMeters together; faults ask for faultCodes alone. History windows are half-open
[startTime, endTime). Samsara's per-endpoint tiers go down to 25 requests a second, the default budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from fleetstream.producers.fleet.http import ApiClient, HttpSettings
from fleetstream.producers.fleet.models import (
    SamsaraAssignment,
    SamsaraAssignmentsPage,
    SamsaraDriver,
    SamsaraDriversPage,
    SamsaraLatestStats,
    SamsaraLatestStatsPage,
    SamsaraPagination,
    SamsaraStatsHistoryPage,
    SamsaraVehicle,
    SamsaraVehiclesPage,
    SamsaraVehicleStats,
    parse,
)
from fleetstream.producers.fleet.pagination import cursor_items
from fleetstream.producers.fleet.unify import (
    METERS_PER_MILE,
    ODOMETER_MATCH_WINDOW_MS,
    AssignmentIndex,
    UnifiedFault,
    UnifiedLocation,
    samsara_faults,
    samsara_locations,
    to_ms,
)

__all__ = ["LOCATION_TYPES", "SAMSARA_BASE_URL", "SamsaraClient", "rfc3339", "samsara_settings"]

SAMSARA_BASE_URL = "https://api.samsara.com"
LOCATION_TYPES = ("gps", "engineStates", "obdOdometerMeters")
MAX_TYPES_PER_CALL = 3
LIST_LIMIT = 512


def samsara_settings(base_url: str = SAMSARA_BASE_URL, **overrides: Any) -> HttpSettings:
    """Samsara defaults: 25 requests a second (the strictest common endpoint tier), burst 25."""
    return HttpSettings(base_url=base_url, **{"rate_per_s": 25.0, "burst": 25, **overrides})


def rfc3339(when: datetime) -> str:
    """UTC RFC 3339 with milliseconds and `Z`, the form Samsara documents."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SamsaraClient:
    """Samsara endpoints for the poller: `locations(start, end)` and `faults(start, end)`, plus the lists.

    `context_pad` widens the stats window backwards for the joins: an engine state or odometer reading
    shortly before the first gps point still applies to it (default 30 minutes, the odometer window).
    """

    provider = "samsara"

    def __init__(
        self,
        api_token: SecretStr | str,
        settings: HttpSettings | None = None,
        *,
        context_pad: timedelta = timedelta(milliseconds=ODOMETER_MATCH_WINDOW_MS),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        token = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        self.api = ApiClient(self.provider, settings or samsara_settings(), "Authorization",
                             SecretStr(f"Bearer {token}"), sleep=sleep, clock=clock, rng=rng, transport=transport)
        self.context_pad = context_pad
        self._open_since_ms: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"SamsaraClient({self.api!r})"

    def close(self) -> None:
        self.api.close()

    def _walk(self, endpoint: str, path: str, model: type[Any], params: dict[str, str | int]) -> list[Any]:
        def fetch_page(after: str | None) -> tuple[list[Any], SamsaraPagination]:
            body = self.api.get_json(endpoint, path, {**params, **({"after": after} if after else {})})
            page = parse(model, body, self.provider, endpoint)
            return page.data, page.pagination

        return list(cursor_items(fetch_page, self.provider, endpoint))

    # ------------------------------------------------------------ lists

    def vehicles(self) -> list[SamsaraVehicle]:
        return self._walk("vehicles", "/fleet/vehicles", SamsaraVehiclesPage, {"limit": LIST_LIMIT})

    def drivers(self, activation_status: str = "active") -> list[SamsaraDriver]:
        return self._walk("drivers", "/fleet/drivers", SamsaraDriversPage,
                          {"limit": LIST_LIMIT, "driverActivationStatus": activation_status})

    def assignments(self, start: datetime, end: datetime) -> list[SamsaraAssignment]:
        """Driver-vehicle assignments overlapping [start, end) (the server pages by a fixed 50)."""
        return self._walk("driver_vehicle_assignments", "/fleet/driver-vehicle-assignments", SamsaraAssignmentsPage,
                          {"filterBy": "vehicles", "startTime": rfc3339(start), "endTime": rfc3339(end)})

    # ------------------------------------------------------------ stats

    def stats_history(self, types: Sequence[str], start: datetime, end: datetime) -> list[SamsaraVehicleStats]:
        """Readings of up to 3 stat types in [start, end), merged per vehicle across pages."""
        if not 1 <= len(types) <= MAX_TYPES_PER_CALL:
            raise ValueError(f"Samsara takes 1 to {MAX_TYPES_PER_CALL} stat types per call, got {list(types)}")
        pages = self._walk("vehicle_stats_history", "/fleet/vehicles/stats/history", SamsaraStatsHistoryPage,
                           {"types": ",".join(types), "startTime": rfc3339(start), "endTime": rfc3339(end)})
        merged: dict[str, SamsaraVehicleStats] = {}
        for stats in pages:  # one vehicle may continue on the next page
            seen = merged.get(stats.id)
            merged[stats.id] = stats if seen is None else seen.model_copy(update={
                "gps": [*seen.gps, *stats.gps], "engineStates": [*seen.engineStates, *stats.engineStates],
                "obdOdometerMeters": [*seen.obdOdometerMeters, *stats.obdOdometerMeters],
                "faultCodes": [*seen.faultCodes, *stats.faultCodes]})
        return list(merged.values())

    def latest_stats(self, types: Sequence[str] = LOCATION_TYPES) -> list[SamsaraLatestStats]:
        if not 1 <= len(types) <= MAX_TYPES_PER_CALL:
            raise ValueError(f"Samsara takes 1 to {MAX_TYPES_PER_CALL} stat types per call, got {list(types)}")
        return self._walk("vehicle_stats", "/fleet/vehicles/stats", SamsaraLatestStatsPage,
                          {"types": ",".join(types)})

    # ------------------------------------------------------------ unified

    def locations(self, start: datetime, end: datetime) -> list[UnifiedLocation]:
        """Unified gps points with `start <= time < end`, joined with engine state, odometer and driver."""
        padded_start = start - self.context_pad
        assignments = AssignmentIndex(self.assignments(start, end))
        start_ms = to_ms(start)
        unified: list[UnifiedLocation] = []
        for stats in self.stats_history(LOCATION_TYPES, padded_start, end):
            unified.extend(point for point in samsara_locations(stats, assignments) if point.timestamp_ms >= start_ms)
        return unified

    def latest_locations(self) -> list[UnifiedLocation]:
        """The latest gps point of each vehicle, with its latest engine state and odometer."""
        unified: list[UnifiedLocation] = []
        for stats in self.latest_stats(LOCATION_TYPES):
            if stats.gps is None:
                continue
            gps = stats.gps
            meters = stats.obdOdometerMeters.value if stats.obdOdometerMeters else None
            unified.append(UnifiedLocation(
                provider=self.provider, provider_vehicle_id=stats.id, vin=stats.samsara_vin, fleet_number=stats.name,
                timestamp_ms=to_ms(gps.time), latitude=gps.latitude, longitude=gps.longitude,
                speed_mph=gps.speedMilesPerHour, heading_degrees=gps.headingDegrees,
                engine_state=stats.engineState.value if stats.engineState else None,
                location_description=gps.reverseGeo.formattedLocation if gps.reverseGeo else None,
                odometer_miles=meters / METERS_PER_MILE if meters is not None else None))
        return unified

    def faults(self, start: datetime, end: datetime) -> list[UnifiedFault]:
        """Fault episodes folded from the faultCodes snapshots in [start, end).

        A window sees only part of a long episode, so the first observation of each still-open code is
        remembered across calls (and forgotten once it closes): successive polls report one episode with
        a stable start instead of one whose start slides with the window. The episode's start makes its
        `fault_id` (`<source>:<tx>:<code>@<first ms>`), so two episodes of one code stay apart.
        """
        unified = []
        for stats in self.stats_history(("faultCodes",), start, end):
            for fault in samsara_faults(stats):
                identity = (fault.provider_vehicle_id, fault.fault_id)
                first_ms = min(fault.first_observed_ms, self._open_since_ms.get(identity, fault.first_observed_ms))
                if fault.status == "open":
                    self._open_since_ms[identity] = first_ms
                else:
                    self._open_since_ms.pop(identity, None)
                unified.append(replace(fault, first_observed_ms=first_ms, fault_id=f"{fault.fault_id}@{first_ms}"))
        return unified
