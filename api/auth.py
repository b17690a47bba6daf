"""Who is calling: the bearer JWT or API key of a request, checked against the user store on every request.

The token says who the caller was when it was issued; the user store says who they are now. A token of a
user who was disabled, deleted, or moved to another org or role since is refused, so a change takes effect
at once rather than when the token expires. The principal's vehicle scope is the store's, not the token's.

401: no credentials or bad credentials. 403: authenticated but the role lacks the permission. Data that is
outside the caller's org or vehicles is a 404 (raised by the endpoints), so its existence is not disclosed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from fleetstream.api.rbac import Permission, Principal
from fleetstream.api.services import Services
from fleetstream.api.tokens import TokenError

__all__ = ["not_found", "require", "services_of"]

_bearer = HTTPBearer(auto_error=False, description="A JWT from POST /api/v1/auth/login, or an API key (fsk_...).")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key for machine clients.")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _unauthorized(request: Request, reason: str) -> HTTPException:
    services_of(request).metrics.denied.labels("unauthenticated").inc()
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})


def not_found(request: Request, what: str = "not found") -> HTTPException:
    """The answer for anything outside the caller's scope (counted as a denial)."""
    services_of(request).metrics.denied.labels("out_of_scope").inc()
    return HTTPException(404, what)


def _from_token(request: Request, token: str) -> Principal:
    services = services_of(request)
    try:
        claims = services.issuer.verify(token)
    except TokenError as exc:
        raise _unauthorized(request, str(exc)) from exc
    user = services.users.get(str(claims["sub"]))
    if (user is None or user.disabled or user.user_id != claims["user_id"] or user.org_id != claims["org_id"]
            or user.role.value != claims["role"]):
        raise _unauthorized(request, "token no longer matches an enabled user")
    return user.principal("jwt")


def _from_api_key(request: Request, key: str) -> Principal:
    user = services_of(request).users.by_api_key(key)
    if user is None:
        raise _unauthorized(request, "invalid API key")
    return user.principal("api_key")


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Principal:
    if api_key:
        principal = _from_api_key(request, api_key)
    elif bearer is not None and bearer.credentials.startswith("fsk_"):
        principal = _from_api_key(request, bearer.credentials)
    elif bearer is not None:
        principal = _from_token(request, bearer.credentials)
    else:
        raise _unauthorized(request, "not authenticated")
    request.state.principal = principal  # for the audit entry
    return principal


def require(permission: Permission | None = None) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the authenticated caller, who must hold `permission` (None = any authenticated user).

    It and `authenticate` are coroutines on purpose: they only compute (HS256, a dict lookup, a SHA-256), and a
    plain function dependency costs each request a hop to the thread pool and back; under 100 users those
    hand-overs were a third of the event loop's busy time (py-spy)."""

    async def dependency(request: Request, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if permission is not None and not principal.may(permission):
            services_of(request).metrics.denied.labels("forbidden").inc()
            raise HTTPException(403, f"role {principal.role.value} lacks permission {permission.value}")
        return principal

    return dependency
