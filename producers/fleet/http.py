"""The HTTP client every fleet provider uses: pooled httpx, timeouts, retries, rate limit, TLS, auth.

One `ApiClient` per provider (its own connection pool, token bucket and retry budget), so a slow or
throttled provider never holds up another. Retries cover what is transient: network errors, 5xx and
429. The wait is `Retry-After` when the server sends one (seconds, possibly fractional like Samsara's
`0.40235`, or an HTTP date), else exponential backoff with full jitter (a uniform draw in
[0, min(cap, base * 2**attempt)]), which spreads clients apart after a shared outage. 401/403 and other
4xx fail at once: retrying a bad token or a bad parameter only burns the rate budget.

Tokens come from the caller (who reads MOTIVE_API_KEY / SAMSARA_API_TOKEN at the edge), are held as
`SecretStr`, and never appear in reprs, logs or error messages.
"""

from __future__ import annotations

import email.utils
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fleetstream.producers.fleet.errors import (
    AuthError,
    MalformedResponseError,
    RequestRejectedError,
    RetriesExhaustedError,
)
from fleetstream.producers.fleet.ratelimit import TokenBucket

__all__ = ["ApiClient", "HttpSettings", "backoff_delay_s", "parse_retry_after_s", "tls_verify"]

log = logging.getLogger(__name__)

QueryParams = Mapping[str, str | int | float]


class HttpSettings(BaseModel):
    """Connection, retry, rate-limit and TLS settings of one provider's client."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    max_retry_after_s: float = 300.0
    """A `Retry-After` longer than this is cut to it, so a bogus header cannot park the poller for hours."""
    rate_per_s: float = 1.0
    burst: int = 5
    max_connections: int = 10
    verify_tls: bool = True
    ca_bundle: Path | None = None
    """A PEM file of CAs to trust instead of certifi's (a corporate TLS-inspecting proxy's root)."""
    use_truststore: bool = False
    """Trust the operating system's store through the `truststore` package (Windows, macOS, Zscaler)."""
    user_agent: str = "fleetstream-fleet-poller/0.1"


def tls_verify(settings: HttpSettings) -> bool | ssl.SSLContext:
    """The httpx `verify` value: off, a CA bundle, the OS trust store, or certifi's default bundle."""
    if not settings.verify_tls:
        return False
    if settings.ca_bundle is not None:
        if not settings.ca_bundle.is_file():
            raise FileNotFoundError(f"CA bundle {settings.ca_bundle} does not exist")
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    if settings.use_truststore:
        try:
            import truststore
        except ImportError as exc:  # optional dependency
            raise RuntimeError("use_truststore needs the truststore package (pip install truststore), "
                               "or set ca_bundle to a PEM file") from exc
        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


def parse_retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds (fractional accepted) or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a wait


def backoff_delay_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap_s, base_s * (2.0 ** attempt)))


def _error_message(response: httpx.Response) -> str:
    """The provider's error text: Motive's `error_message`, Samsara's `message`, or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error_message", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return str(body)[:200]


@dataclass(frozen=True, slots=True)
class _Outcome:
    body: Any = None
    failure: str | None = None
    retry_after_s: float | None = None


class ApiClient:
    """GETs JSON from one provider with pooling, rate limit and retries; see the module docstring.

    `auth_header` is the header name (`X-Api-Key`, `Authorization`) and `auth_value` its secret value
    (`SecretStr` so it prints as `**********`). `sleep`, `clock` and `rng` are injectable for tests.
    The httpx client is created on first use, so constructing an ApiClient touches no network.
    """

    def __init__(
        self,
        provider: str,
        settings: HttpSettings,
        auth_header: str,
        auth_value: SecretStr | str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.provider = provider
        self.settings = settings
        self._auth_header = auth_header
        self._auth_value = auth_value if isinstance(auth_value, SecretStr) else SecretStr(auth_value)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._transport = transport
        self.bucket = TokenBucket(settings.rate_per_s, settings.burst, clock=clock, sleep=sleep)
        self._client: httpx.Client | None = None
        self.requests_sent = 0
        self.retries = 0

    def __repr__(self) -> str:
        return (f"ApiClient(provider={self.provider!r}, base_url={self.settings.base_url!r}, "
                f"{self._auth_header}={self._auth_value!r})")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            timeout = httpx.Timeout(self.settings.read_timeout_s, connect=self.settings.connect_timeout_s)
            limits = httpx.Limits(max_connections=self.settings.max_connections,
                                  max_keepalive_connections=self.settings.max_connections)
            self._client = httpx.Client(
                base_url=self.settings.base_url, timeout=timeout, limits=limits, verify=tls_verify(self.settings),
                headers={"Accept": "application/json", "User-Agent": self.settings.user_agent},
                transport=self._transport,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def get_json(self, endpoint: str, path: str, params: QueryParams | None = None) -> Any:
        """GET `path` and return the decoded JSON; `endpoint` names the call in errors and logs."""
        attempt = 0
        while True:
            self.bucket.acquire()
            outcome = self._attempt(endpoint, path, params)
            if outcome.failure is None:
                return outcome.body
            if attempt >= self.settings.max_retries:
                raise RetriesExhaustedError(self.provider, endpoint, attempt + 1, outcome.failure)
            delay_s = (min(outcome.retry_after_s, self.settings.max_retry_after_s)
                       if outcome.retry_after_s is not None
                       else backoff_delay_s(attempt, self.settings.backoff_base_s, self.settings.backoff_cap_s,
                                            self._rng))
            log.warning("%s %s: %s; retry %d/%d in %.2f s", self.provider, endpoint, outcome.failure, attempt + 1,
                        self.settings.max_retries, delay_s)
            self._sleep(delay_s)
            attempt += 1
            self.retries += 1

    def _attempt(self, endpoint: str, path: str, params: QueryParams | None) -> _Outcome:
        """One request: the body on success, the failure and any `Retry-After` when retryable; raises otherwise."""
        headers = {self._auth_header: self._auth_value.get_secret_value()}
        self.requests_sent += 1
        try:
            response = self.client.get(path, params=dict(params or {}), headers=headers)
        except httpx.TransportError as exc:  # connect/read timeouts, refused, reset, TLS failures
            return _Outcome(failure=f"network error {type(exc).__name__}: {exc}")
        status = response.status_code
        if status < 300:
            return _Outcome(body=self._decode(endpoint, response))
        if status in (401, 403):
            raise AuthError(self.provider, endpoint, f"HTTP {status}: {_error_message(response)}")
        if status == 429 or status >= 500:
            return _Outcome(failure=f"HTTP {status}: {_error_message(response)}",
                            retry_after_s=parse_retry_after_s(response.headers.get("Retry-After")))
        raise RequestRejectedError(self.provider, endpoint, status, _error_message(response))

    def _decode(self, endpoint: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedResponseError(self.provider, endpoint, "<body>", f"not JSON ({exc})") from exc
