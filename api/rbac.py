"""Roles, permissions and the caller's data scope: who may call what, and which rows they may see.

Roles are seed 003's six. A role grants a fixed set of permissions, checked by every endpoint; the vehicle
scope (`vehicle_ids`, `*` = every vehicle of the org) limits the rows. Owners and technicians are meant to
have explicit vehicle lists; the other roles normally have `*`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ALL_VEHICLES", "ROLE_PERMISSIONS", "Permission", "Principal", "Role", "permissions_of"]

ALL_VEHICLES = "*"


class Role(StrEnum):
    OWNER = "owner"
    FLEET_MANAGER = "fleet_manager"
    TECHNICIAN = "technician"
    ADMIN = "admin"
    EXECUTIVE = "executive"
    SUPPORT = "support"


class Permission(StrEnum):
    DASHBOARD_FLEET = "dashboard:fleet"
    DASHBOARD_OWNER = "dashboard:owner"
    DASHBOARD_TECHNICIAN = "dashboard:technician"
    DASHBOARD_EXECUTIVE = "dashboard:executive"
    METRICS_READ = "metrics:read"
    VEHICLES_READ = "vehicles:read"
    DYNO_READ = "dyno:read"
    ALERTS_READ = "alerts:read"
    ALERTS_ACKNOWLEDGE = "alerts:acknowledge"
    REPORTS_GENERATE = "reports:generate"
    AUDIT_READ = "audit:read"
    USERS_MANAGE = "users:manage"
    ANALYTICS_WRITE = "analytics:write"
    """Track events, define metrics and segments, record metric values (seed 004); reading them is metrics:read."""


_P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # seed 003: "View own vehicle(s)" -> the owner dashboard and their vehicles' drill-down and alerts
    Role.OWNER: frozenset({_P.DASHBOARD_OWNER, _P.VEHICLES_READ, _P.ALERTS_READ, _P.DYNO_READ}),
    # "View all fleet vehicles, analytics"
    # "View all fleet vehicles, analytics": their analytics include tracking events and defining metrics, segments
    Role.FLEET_MANAGER: frozenset({_P.DASHBOARD_FLEET, _P.METRICS_READ, _P.VEHICLES_READ, _P.DYNO_READ,
                                   _P.ALERTS_READ, _P.ALERTS_ACKNOWLEDGE, _P.REPORTS_GENERATE,
                                   _P.ANALYTICS_WRITE}),
    # "View assigned jobs, update status": their vehicles, and acknowledging the alerts they work on
    Role.TECHNICIAN: frozenset({_P.DASHBOARD_TECHNICIAN, _P.VEHICLES_READ, _P.DYNO_READ, _P.ALERTS_READ,
                                _P.ALERTS_ACKNOWLEDGE}),
    # "Full system access, user management"
    Role.ADMIN: frozenset(Permission),
    # "High-level metrics, cost reports"
    Role.EXECUTIVE: frozenset({_P.DASHBOARD_EXECUTIVE, _P.METRICS_READ, _P.REPORTS_GENERATE}),
    # "Read-only, assist customers": can look at what a customer sees, changes nothing, exports nothing
    Role.SUPPORT: frozenset({_P.DASHBOARD_OWNER, _P.VEHICLES_READ, _P.ALERTS_READ, _P.METRICS_READ}),
}


def permissions_of(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as the token (or API key) says and the user store confirms."""

    user_id: str
    username: str
    role: Role
    org_id: str
    vehicle_ids: tuple[str, ...]
    auth: str = "jwt"
    """jwt or api_key."""

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.role)

    @property
    def all_vehicles(self) -> bool:
        return ALL_VEHICLES in self.vehicle_ids

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def sees_vehicle(self, vehicle_id: str) -> bool:
        """Whether the vehicle scope includes `vehicle_id` (the org is checked by the query layer)."""
        return self.all_vehicles or vehicle_id in self.vehicle_ids
