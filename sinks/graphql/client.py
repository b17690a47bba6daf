"""HTTP transport to the GraphQL backend: bearer token, TLS options, retries with backoff and jitter.

Outcomes are sorted by what helps: network errors, 429 and 5xx are retried with exponential backoff
and jitter up to the budget (then `BackendUnavailable`); GraphQL `errors` in a 200 and other 4xx are
the backend saying no, never retried (`BackendRejected`, carrying its message); 401/403 are fatal
(`BackendAuthError`). The token goes only into the Authorization header: it is never logged and never
part of an exception message.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from fleetstream.sinks.graphql.exceptions import (
    BackendAuthError,
    BackendRejected,
    BackendUnavailable,
    BackendUnreachable,
)
from fleetstream.sinks.graphql.payloads import GraphQLRequest, detect_request

__all__ = ["GraphQLClient", "RetryPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait before try n+1 is drawn from [d/2, d], d = min(max, base * 2**(n-1))."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, failed_attempts: int, rng: random.Random) -> float:
        # "Equal jitter": never less than half the exponential step, so many sinks restarted together
        # spread out without any of them hammering a recovering backend.
        step = min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempts - 1))
        return step / 2 + rng.uniform(0, step / 2)


class _Retryable(Exception):
    """A transient failure of one try; internal to `GraphQLClient`."""


class GraphQLClient:
    """Sends `GraphQLRequest`s; returns the response's `data` or raises one of
    `fleetstream.sinks.graphql.exceptions`."""

    def __init__(self, endpoint: str, token: SecretStr | None = None, *, verify: bool | ssl.SSLContext = True,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None and token.get_secret_value():
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self.requests = 0
        """HTTP requests sent, retries included."""
        self.failures = 0
        """Requests that ended without the backend's acceptance (after retries)."""
        self._http = httpx.Client(headers=headers, verify=verify, timeout=timeout_s, transport=transport)
        self._sleep = sleep
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GraphQLClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def execute(self, request: GraphQLRequest) -> dict[str, Any]:
        """Send `request`, retrying transient failures; the `data` of the accepted response."""
        # allow_nan=False: a NaN would make invalid JSON; the payload layer already refuses them.
        body = json.dumps(request.body(), allow_nan=False, separators=(",", ":")).encode()
        last_error = ""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._try(request.field, body)
            except _Retryable as exc:
                last_error = str(exc)
            except (BackendRejected, BackendAuthError):
                self.failures += 1
                raise
            if attempt < self.retry.attempts:
                delay = self.retry.delay(attempt, self._rng)
                log.warning("%s: %s; retry %d/%d in %.2fs", request.field, last_error, attempt,
                            self.retry.attempts - 1, delay)
                self._sleep(delay)
        self.failures += 1
        raise BackendUnavailable(request.field, self.retry.attempts, last_error)

    def probe(self, timeout_s: float = 5.0) -> None:
        """One request, no retries: `BackendUnreachable` without an HTTP answer, `BackendAuthError` on 401/403.

        Run before consuming, so a backend that is not there fails the start instead of turning a whole
        backlog into `unavailable` dead letters after the retry budget.
        """
        body = json.dumps(detect_request().body(), separators=(",", ":")).encode()
        try:
            response = self._http.post(self.endpoint, content=body, timeout=timeout_s)
        except httpx.TransportError as exc:
            log.debug("probe of %s failed: %r", self.endpoint, exc)
            raise BackendUnreachable(f"cannot reach the GraphQL backend at {self.endpoint}",
                                     f"is it running? set GRAPHQL_ENDPOINT; {type(exc).__name__}") from exc
        if response.status_code in (401, 403):
            raise BackendAuthError(f"the GraphQL backend at {self.endpoint} refused the credentials "
                                   f"(HTTP {response.status_code})")

    def _try(self, field: str, body: bytes) -> dict[str, Any]:
        self.requests += 1
        try:
            response = self._http.post(self.endpoint, content=body)
        except httpx.TransportError as exc:  # connect, read, write, timeouts, protocol errors
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        return _interpret(field, response)


def _interpret(field: str, response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if status in (401, 403):
        raise BackendAuthError(f"backend refused the credentials for {field} (HTTP {status})")
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}")
    try:
        payload = response.json()
    except ValueError as exc:
        if status >= 400:
            raise BackendRejected(field, status, response.text[:500] or f"HTTP {status}") from exc
        raise _Retryable(f"HTTP {status} with a body that is not JSON") from exc
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if errors or status >= 400:
        raise BackendRejected(field, status, _error_text(errors) or f"HTTP {status}")
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise BackendRejected(field, status, "response has neither data nor errors")
    return data


def _error_text(errors: Any) -> str:
    if not isinstance(errors, list):
        return str(errors or "")
    return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
