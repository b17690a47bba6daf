"""Pydantic models of the Motive and Samsara responses the pollers read.

Only the fields we use are declared; everything else is ignored (`extra="ignore"`), because both
providers add fields without notice. A declared field of the wrong type or out of range (a latitude
of 122, a timestamp without a zone) is rejected, and `parse()` turns pydantic's error into a
`MalformedResponseError` naming the provider, endpoint and field. Shapes follow the captured responses
in tests/data/fleet/ (see its README for their origin).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleetstream.producers.fleet.errors import MalformedResponseError

__all__ = [
    "MotiveDriver",
    "MotiveFaultCode",
    "MotiveFaultCodesPage",
    "MotiveLatestLocationsPage",
    "MotiveLocation",
    "MotiveLocationsResponse",
    "MotivePagination",
    "MotiveUser",
    "MotiveUsersPage",
    "MotiveVehicle",
    "MotiveVehiclesPage",
    "SamsaraAssignment",
    "SamsaraAssignmentsPage",
    "SamsaraDriver",
    "SamsaraDriversPage",
    "SamsaraFaultCodes",
    "SamsaraGps",
    "SamsaraLatestStatsPage",
    "SamsaraPagination",
    "SamsaraStatsHistoryPage",
    "SamsaraVehicle",
    "SamsaraVehiclesPage",
    "parse",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]


class _Lenient(BaseModel):
    """Base of every response model: unknown fields are ignored, declared ones validated."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def parse(model: type[M], payload: Any, provider: str, endpoint: str) -> M:
    """Validate `payload` as `model`; a mismatch becomes a MalformedResponseError naming the first bad field."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MalformedResponseError(provider, endpoint, field, f"{first['msg']}{more}") from exc


# ---------------------------------------------------------------- Motive


class MotivePagination(_Lenient):
    per_page: int = Field(ge=1)
    page_no: int = Field(ge=1)
    total: int = Field(ge=0)


class MotiveDriver(_Lenient):
    """A driver embedded in a location or vehicle (`driver`, `current_driver`)."""

    id: int
    first_name: str | None = None
    last_name: str | None = None

    @property
    def full_name(self) -> str | None:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or None


class MotiveVehicle(_Lenient):
    id: int
    number: str | None = None
    vin: str | None = None
    status: str | None = None
    metric_units: bool = False
    current_driver: MotiveDriver | None = None


class _MotiveVehicleItem(_Lenient):
    vehicle: MotiveVehicle


class MotiveVehiclesPage(_Lenient):
    """GET /v1/vehicles: `{"vehicles": [{"vehicle": {...}}], "pagination": {...}}`."""

    vehicles: list[_MotiveVehicleItem]
    pagination: MotivePagination | None = None

    @property
    def items(self) -> list[MotiveVehicle]:
        return [item.vehicle for item in self.vehicles]


class MotiveLocation(_Lenient):
    """One breadcrumb of GET /v3/vehicle_locations/{id}; `speed` is km/h on metric vehicles."""

    located_at: AwareDatetime
    lat: Latitude
    lon: Longitude
    type: str | None = None
    description: str | None = None
    speed: float | None = None
    bearing: float | None = None
    odometer: float | None = None
    true_odometer: float | None = None
    driver: MotiveDriver | None = None


class _MotiveLocationItem(_Lenient):
    vehicle_location: MotiveLocation


class MotiveLocationsResponse(_Lenient):
    """GET /v3/vehicle_locations/{id}: no pagination block; the date range bounds the answer."""

    vehicle_locations: list[_MotiveLocationItem]

    @property
    def items(self) -> list[MotiveLocation]:
        return [item.vehicle_location for item in self.vehicle_locations]


class MotiveCurrentLocation(_Lenient):
    located_at: AwareDatetime
    lat: Latitude
    lon: Longitude
    type: str | None = None
    description: str | None = None
    speed: float | None = None
    bearing: float | None = None
    odometer: float | None = None
    true_odometer: float | None = None


class MotiveVehicleWithLocation(MotiveVehicle):
    current_location: MotiveCurrentLocation | None = None


class _MotiveLatestItem(_Lenient):
    vehicle: MotiveVehicleWithLocation


class MotiveLatestLocationsPage(_Lenient):
    """GET /v1/vehicle_locations: the last known location of each active vehicle."""

    vehicles: list[_MotiveLatestItem]
    pagination: MotivePagination | None = None

    @property
    def items(self) -> list[MotiveVehicleWithLocation]:
        return [item.vehicle for item in self.vehicles]


class MotiveUser(_Lenient):
    id: int
    first_name: str | None = None
    last_name: str | None = None
    role: str | None = None
    status: str | None = None


class _MotiveUserItem(_Lenient):
    user: MotiveUser


class MotiveUsersPage(_Lenient):
    users: list[_MotiveUserItem]
    pagination: MotivePagination | None = None

    @property
    def items(self) -> list[MotiveUser]:
        return [item.user for item in self.users]


class MotiveFaultVehicle(_Lenient):
    id: int
    number: str | None = None
    vin: str | None = None


class MotiveFaultCode(_Lenient):
    id: int
    code: str
    code_description: str | None = None
    status: str = Field(pattern="^(open|closed)$")
    first_observed_at: AwareDatetime
    last_observed_at: AwareDatetime | None = None
    source_address: str | None = None
    vehicle: MotiveFaultVehicle


class _MotiveFaultItem(_Lenient):
    fault_code: MotiveFaultCode


class MotiveFaultCodesPage(_Lenient):
    fault_codes: list[_MotiveFaultItem]
    pagination: MotivePagination | None = None

    @property
    def items(self) -> list[MotiveFaultCode]:
        return [item.fault_code for item in self.fault_codes]


# ---------------------------------------------------------------- Samsara


class SamsaraPagination(_Lenient):
    endCursor: str
    hasNextPage: bool


class SamsaraRef(_Lenient):
    """`{id, name}` references: staticAssignedDriver, assignment driver."""

    id: str
    name: str | None = None


class SamsaraVehicle(_Lenient):
    id: str
    name: str | None = None
    vin: str | None = None
    externalIds: dict[str, str] | None = None
    staticAssignedDriver: SamsaraRef | None = None

    @property
    def samsara_vin(self) -> str | None:
        return (self.externalIds or {}).get("samsara.vin") or self.vin


class SamsaraVehiclesPage(_Lenient):
    data: list[SamsaraVehicle]
    pagination: SamsaraPagination


class SamsaraDriver(_Lenient):
    id: str
    name: str | None = None
    driverActivationStatus: str | None = None


class SamsaraDriversPage(_Lenient):
    data: list[SamsaraDriver]
    pagination: SamsaraPagination


class SamsaraAssignmentVehicle(_Lenient):
    id: str
    name: str | None = None


class SamsaraAssignment(_Lenient):
    """A driver-vehicle assignment interval; `endTime` is empty or absent while it is still open."""

    driver: SamsaraRef
    vehicle: SamsaraAssignmentVehicle
    startTime: AwareDatetime
    endTime: AwareDatetime | None = None
    isPassenger: bool = False

    @field_validator("endTime", mode="before")
    @classmethod
    def _empty_is_open(cls, value: Any) -> Any:
        return None if value == "" else value


class SamsaraAssignmentsPage(_Lenient):
    data: list[SamsaraAssignment]
    pagination: SamsaraPagination


class SamsaraReverseGeo(_Lenient):
    formattedLocation: str | None = None


class SamsaraGps(_Lenient):
    time: AwareDatetime
    latitude: Latitude
    longitude: Longitude
    headingDegrees: float | None = None
    speedMilesPerHour: float | None = None
    reverseGeo: SamsaraReverseGeo | None = None


class SamsaraTimedValue(_Lenient, Generic[T]):
    time: AwareDatetime
    value: T


class SamsaraJ1939Code(_Lenient):
    spnId: int
    fmiId: int
    spnDescription: str | None = None
    fmiDescription: str | None = None
    sourceAddressName: str | None = None
    txId: int | None = None


class SamsaraJ1939(_Lenient):
    diagnosticTroubleCodes: list[SamsaraJ1939Code] = Field(default_factory=list)


class SamsaraObdDtc(_Lenient):
    dtcShortCode: str
    dtcDescription: str | None = None
    dtcId: int | None = None


class SamsaraObdEcu(_Lenient):
    confirmedDtcs: list[SamsaraObdDtc] = Field(default_factory=list)
    pendingDtcs: list[SamsaraObdDtc] = Field(default_factory=list)
    permanentDtcs: list[SamsaraObdDtc] = Field(default_factory=list)
    txId: int | None = None


class SamsaraObdii(_Lenient):
    diagnosticTroubleCodes: list[SamsaraObdEcu] = Field(default_factory=list)


class SamsaraOemCode(_Lenient):
    codeIdentifier: str
    codeDescription: str | None = None
    codeSource: str | None = None


class SamsaraOem(_Lenient):
    diagnosticTroubleCodes: list[SamsaraOemCode] = Field(default_factory=list)


class SamsaraFaultCodes(_Lenient):
    """One faultCodes reading: the codes active at `time` (a snapshot, not an episode)."""

    time: AwareDatetime
    canBusType: str | None = None
    j1939: SamsaraJ1939 | None = None
    obdii: SamsaraObdii | None = None
    oem: SamsaraOem | None = None


class SamsaraVehicleStats(_Lenient):
    """One vehicle of /fleet/vehicles/stats/history (or /feed): arrays per requested type."""

    id: str
    name: str | None = None
    externalIds: dict[str, str] | None = None
    gps: list[SamsaraGps] = Field(default_factory=list)
    engineStates: list[SamsaraTimedValue[str]] = Field(default_factory=list)
    obdOdometerMeters: list[SamsaraTimedValue[float]] = Field(default_factory=list)
    faultCodes: list[SamsaraFaultCodes] = Field(default_factory=list)

    @property
    def samsara_vin(self) -> str | None:
        return (self.externalIds or {}).get("samsara.vin")


class SamsaraStatsHistoryPage(_Lenient):
    data: list[SamsaraVehicleStats]
    pagination: SamsaraPagination


class SamsaraLatestStats(_Lenient):
    """One vehicle of /fleet/vehicles/stats (latest): singular objects (`engineState`, not `engineStates`)."""

    id: str
    name: str | None = None
    externalIds: dict[str, str] | None = None
    gps: SamsaraGps | None = None
    engineState: SamsaraTimedValue[str] | None = None
    obdOdometerMeters: SamsaraTimedValue[float] | None = None

    @property
    def samsara_vin(self) -> str | None:
        return (self.externalIds or {}).get("samsara.vin")


class SamsaraLatestStatsPage(_Lenient):
    data: list[SamsaraLatestStats]
    pagination: SamsaraPagination
