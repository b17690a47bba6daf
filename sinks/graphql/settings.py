"""Options of the GraphQL forwarder that the shared `Settings` tree does not carry (yet).

The endpoint and the bearer token come from `fleetstream.config.Settings` (`GRAPHQL_ENDPOINT`,
`SEC_AUTH_TOKEN`); batching, TLS, retries and the consumer group live here with defaults that match
the public vehicle client (`batch_size` 100 per request, 10 000 GPS points per request).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, Field

__all__ = ["FORWARDED_TOPICS", "GraphQLSinkSettings"]

FORWARDED_TOPICS = ("telemetry.signals.valid", "telemetry.dtcs.valid", "telemetry.gps.valid",
                    "telemetry.netstats.valid")
"""The validated topics whose records the backend receives."""


class GraphQLSinkSettings(BaseModel):
    """Batching, transport and consumer options of the forwarder."""

    batch_size: int = Field(default=100, ge=1, description="Signals or DTC entries per request; records per batch.")
    max_samples_per_request: int = Field(default=10_000, ge=1, description="Data points per request.")
    max_gps_points: int = Field(default=10_000, ge=1, description="GPS points per upsertGpsData request.")
    batch_interval_seconds: float = Field(default=1.0, gt=0, description="Longest a record waits in a batch.")
    verify_tls: bool = True
    ca_bundle: Path | None = Field(default=None, description="CA file for the backend's certificate.")
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, description="Tries per request on network errors and 5xx.")
    retry_base_delay_seconds: float = Field(default=0.5, ge=0)
    retry_max_delay_seconds: float = Field(default=30.0, ge=0)
    group_id: str = "fleetstream-graphql"
    topics: tuple[str, ...] = FORWARDED_TOPICS
    poll_max_messages: int = Field(default=500, ge=1)
    poll_timeout_seconds: float = Field(default=0.2, ge=0)

    def tls_verify(self) -> bool | ssl.SSLContext:
        """httpx's `verify`: off, the system trust store, or a context trusting the CA bundle."""
        if not self.verify_tls:
            return False
        if self.ca_bundle is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_bundle))
