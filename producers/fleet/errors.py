"""Errors of the fleet API pollers: each names the provider and endpoint, and for bad data the field.

The poller logs these and retries on its next cycle; the checkpoint does not move, so nothing is lost.
Messages never carry credentials: they are built from the URL path and query, never from headers.
"""

from __future__ import annotations

from fleetstream.errors import FleetstreamError

__all__ = [
    "AuthError",
    "FleetApiError",
    "MalformedResponseError",
    "RequestRejectedError",
    "RetriesExhaustedError",
]


class FleetApiError(FleetstreamError):
    """A call to a fleet API failed; `provider` and `endpoint` say which one."""

    def __init__(self, provider: str, endpoint: str, message: str):
        super().__init__(f"{provider} {endpoint}: {message}")
        self.provider = provider
        self.endpoint = endpoint


class AuthError(FleetApiError):
    """401/403: the token is missing, wrong or lacks the scope. Retrying cannot help."""


class RequestRejectedError(FleetApiError):
    """Another 4xx: the request is wrong (bad parameter, unknown id). Retrying cannot help."""

    def __init__(self, provider: str, endpoint: str, status_code: int, message: str):
        super().__init__(provider, endpoint, f"HTTP {status_code}: {message}")
        self.status_code = status_code


class RetriesExhaustedError(FleetApiError):
    """Network errors, 5xx or 429 persisted through the whole retry budget."""

    def __init__(self, provider: str, endpoint: str, attempts: int, last_failure: str):
        super().__init__(provider, endpoint, f"gave up after {attempts} attempts; last failure: {last_failure}")
        self.attempts = attempts
        self.last_failure = last_failure


class MalformedResponseError(FleetApiError):
    """The response is not the documented shape: `field` is the dotted path of the first bad value."""

    def __init__(self, provider: str, endpoint: str, field: str, reason: str):
        super().__init__(provider, endpoint, f"malformed response at field {field!r}: {reason}")
        self.field = field
        self.reason = reason
