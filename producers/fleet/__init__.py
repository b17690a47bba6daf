"""Motive and Samsara fleet API pollers: unified location and fault batches onto Kafka, incrementally.

Build a provider client (`MotiveClient`, `SamsaraClient`) with the token the caller read from the
environment (MOTIVE_API_KEY, SAMSARA_API_TOKEN), hand it to a `FleetPoller` with a `CheckpointStore`
and a durable `publish` callable, and call `poll_once()` or `run(stop_event)`; `start_pollers` runs
several providers side by side. `fake.start_fake` serves local fakes of both APIs for demos and tests.
"""

from fleetstream.producers.fleet.checkpoint import Checkpoint, CheckpointStore
from fleetstream.producers.fleet.errors import (
    AuthError,
    FleetApiError,
    MalformedResponseError,
    RequestRejectedError,
    RetriesExhaustedError,
)
from fleetstream.producers.fleet.http import ApiClient, HttpSettings
from fleetstream.producers.fleet.motive import MotiveClient, motive_settings
from fleetstream.producers.fleet.poller import (
    TOKEN_VARIABLES,
    FleetPoller,
    FleetSource,
    Publication,
    build_poller,
    each_record,
    kafka_key,
    start_pollers,
)
from fleetstream.producers.fleet.samsara import SamsaraClient, samsara_settings
from fleetstream.producers.fleet.unify import UnifiedFault, UnifiedLocation, fault_batches, location_batches

__all__ = [
    "TOKEN_VARIABLES",
    "ApiClient",
    "AuthError",
    "Checkpoint",
    "CheckpointStore",
    "FleetApiError",
    "FleetPoller",
    "FleetSource",
    "HttpSettings",
    "MalformedResponseError",
    "MotiveClient",
    "Publication",
    "RequestRejectedError",
    "RetriesExhaustedError",
    "SamsaraClient",
    "UnifiedFault",
    "UnifiedLocation",
    "build_poller",
    "each_record",
    "fault_batches",
    "kafka_key",
    "location_batches",
    "motive_settings",
    "samsara_settings",
    "start_pollers",
]
