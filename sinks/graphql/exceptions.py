"""Why a record or a request did not reach the backend; each class maps to one way of handling it."""

from __future__ import annotations

from fleetstream.errors import FleetstreamError

__all__ = ["BackendAuthError", "BackendRejected", "BackendUnavailable", "BackendUnreachable", "InvalidRecord",
           "OffsetsNotCommitted"]


class InvalidRecord(ValueError):
    """The record cannot be expressed in the backend's contract (e.g. a non-integer id): a dead letter."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BackendRejected(Exception):
    """The backend refused the request (GraphQL `errors`, or HTTP 4xx): retrying cannot help; a dead letter.

    `message` is the backend's own text, carried into the dead letter so a person can fix the cause.
    """

    def __init__(self, field: str, status: int, message: str) -> None:
        super().__init__(f"backend rejected {field} (HTTP {status}): {message}")
        self.field = field
        self.status = status
        self.message = message


class BackendUnavailable(Exception):
    """Network errors or 5xx outlasted the retry budget: a dead letter after `attempts` tries."""

    def __init__(self, field: str, attempts: int, last_error: str) -> None:
        super().__init__(f"{field} failed after {attempts} attempts: {last_error}")
        self.field = field
        self.attempts = attempts
        self.last_error = last_error


class BackendAuthError(FleetstreamError):
    """The backend refused our credentials (401/403): fatal, nothing is committed or dead-lettered.

    Dead-lettering every record because of a wrong token would empty the stream into the DLQ; stopping
    leaves the offsets where they are, so the records are forwarded once the token is fixed.
    """

    def __init__(self, message: str, hint: str = "check SEC_AUTH_TOKEN") -> None:
        super().__init__(message, hint)


class BackendUnreachable(FleetstreamError):
    """No HTTP answer from the backend at start: forwarding would only turn every record into a dead letter."""


class OffsetsNotCommitted(FleetstreamError):
    """Kafka refused a commit: the records since the last commit are forwarded again by the next run."""
