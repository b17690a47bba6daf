"""GraphQL forwarder: validated telemetry into the analytics backend, on the public vehicle client's contract.

- `payloads`: the requests for decoded records (pure; the contract's shapes and value formats).
- `client`: httpx transport with the bearer token, TLS options and retries.
- `forwarder`: one batch through the id caches and the batched mutations.
- `consumer`: the Kafka shell (`GraphQLForwarder`), committing per partition after the backend accepted.
- `contract_backend`: `ContractBackend`, a local stand-in for the real backend that checks every request
  against the contract (shipped for the demo and the tests; the forwarder never imports it).
"""

from fleetstream.config import FORWARDED_TOPICS, GraphQLSinkSettings
from fleetstream.sinks.graphql.client import GraphQLClient, RetryPolicy
from fleetstream.sinks.graphql.consumer import ForwarderStats, GraphQLForwarder
from fleetstream.sinks.graphql.exceptions import BackendAuthError, BackendRejected, BackendUnavailable, InvalidRecord
from fleetstream.sinks.graphql.forwarder import Failure, Forwarder

__all__ = [
    "FORWARDED_TOPICS",
    "BackendAuthError",
    "BackendRejected",
    "BackendUnavailable",
    "Failure",
    "Forwarder",
    "ForwarderStats",
    "GraphQLClient",
    "GraphQLForwarder",
    "GraphQLSinkSettings",
    "InvalidRecord",
    "RetryPolicy",
]
