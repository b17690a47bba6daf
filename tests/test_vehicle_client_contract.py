"""Issue 11's GraphQL proof for the `IcsAnalytics` drop-in: for the seed README's examples (and inputs beyond
them), what reaches the backend is what the official client sends, field by field, null for null.

The path is the real one without a broker: the drop-in encodes and spools the records, the worker's
`validate_message` turns each spooled message into its `.valid` message, and the GraphQL `Forwarder` posts the
decoded `.valid` records over HTTP to the contract-checking backend
(`fleetstream.sinks.graphql.contract_backend`) on 127.0.0.1. The
expected payloads are rebuilt from the official client's code in `tests/official_client.py`. The same check
on the real broker and `fleetstream worker` is in `tests/test_pipeline_vehicle_client.py`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import GraphQLSinkSettings, ValidationSettings
from fleetstream.producers.spool import Spool, SpoolEntry
from fleetstream.producers.vehicle_client import IcsAnalytics
from fleetstream.schemas import codec
from fleetstream.sinks.graphql import Forwarder, GraphQLClient
from fleetstream.sinks.graphql.contract_backend import ContractBackend, start_backend
from fleetstream.streams.app import validate_message
from fleetstream.streams.validation import Validator
from fleetstream.topics import record_type_of
from tests import official_client as official

IDS = {"device_id": 123, "vehicle_id": 456, "fleet_id": 789, "org_id": 1011}  # the README's
HUNDRED_YEARS_MS = 100 * 365 * 24 * 3600 * 1000  # the README signal is from 1970


@pytest.fixture
def backend() -> Iterator[ContractBackend]:
    _, server = start_backend()
    yield server
    server.stop()


def spooled_entries(client: IcsAnalytics) -> list[SpoolEntry]:
    """What the client spooled, in order (its publisher cannot reach the broker, so everything is still there)."""
    client._stop.set()
    client._spool.close()
    spool = Spool(client.spool_dir)
    entries: list[SpoolEntry] = []

    def take(chunk: Sequence[SpoolEntry]) -> list[bool]:
        entries.extend(chunk)
        return [True] * len(chunk)

    while spool.drain_once(take):
        pass
    spool.close()
    return entries


def forward_through_the_worker(entries: list[SpoolEntry], backend: ContractBackend) -> None:
    """Each spooled message through the worker's validation, each `.valid` record through the forwarder."""
    validator = Validator(ValidationSettings(max_age_ms=HUNDRED_YEARS_MS))
    batch: list[tuple[str, dict[str, Any]]] = []
    for offset, entry in enumerate(entries):
        outputs = validate_message(validator, entry.topic, 0, offset, entry.key, entry.value,
                                   now_ms=1_800_000_000_000)
        assert [topic for topic, _, _ in outputs] == [f"{entry.topic}.valid"], "the worker dead-lettered a record"
        for topic, _, value in outputs:
            batch.append((record_type_of(topic), codec.decode(value, record_type_of(topic))))
    forwarder = Forwarder(GraphQLClient(backend.url, None), GraphQLSinkSettings())
    assert forwarder.forward(batch) == {}


def assert_sent_as_the_official_client(backend: ContractBackend, expected: official.Objects) -> None:
    sent = official.sent_objects(backend.calls)
    # Both clients create messages as they first see them; the order across signals and DTCs is not part of
    # the contract (they are different topics here), so messages are compared by name.
    for objects in (expected, sent):
        objects["createMessage"].sort(key=lambda m: m["name"])
    assert official.differences(expected, sent) == []


def drive(tmp_path: Path, feed: Callable[[IcsAnalytics], None]) -> list[SpoolEntry]:
    client = IcsAnalytics(IDS["device_id"], IDS["vehicle_id"], IDS["fleet_id"], IDS["org_id"],
                          graphql_endpoint="https://your-backend/graphql", batch_size=100,
                          batch_interval_seconds=3600, max_signal_count=100, bootstrap_servers="127.0.0.1:1",
                          spool_dir=tmp_path / "spool")
    feed(client)
    return spooled_entries(client)


def config_id(backend: ContractBackend) -> str:
    return backend.resolvers.configurations[(IDS["device_id"], IDS["vehicle_id"], IDS["fleet_id"], IDS["org_id"])]


def message_ids(backend: ContractBackend) -> Callable[[str], str]:
    return lambda name: next(v for k, v in backend.resolvers.messages.items() if k[0] == name)


def test_readme_examples_reach_the_backend_as_the_official_client_sends_them(tmp_path: Path,
                                                                              backend: ContractBackend) -> None:
    def feed(client: IcsAnalytics) -> None:
        client.add_signal(copy.deepcopy(official.README_SIGNAL))
        client.add_dtc(copy.deepcopy(official.README_DTC))
        client.add_gps(copy.deepcopy(official.README_GPS))
        client.add_network_stats(copy.deepcopy(official.README_NETSTATS_CAN1))
        client.add_network_stats(copy.deepcopy(official.README_NETSTATS_JACOBS))

    forward_through_the_worker(drive(tmp_path, feed), backend)

    expected = official.expected_readme(IDS, config_id(backend), message_ids(backend))
    assert_sent_as_the_official_client(backend, expected)


def test_inputs_beyond_the_readme_reach_the_backend_as_the_official_client_sends_them(
        tmp_path: Path, backend: ContractBackend) -> None:
    """Numbers as times, offsets, keys left out or None, an empty list given, a date without a time."""
    def feed(client: IcsAnalytics) -> None:
        for signal in official.BEYOND_README_SIGNALS:
            client.add_signal(copy.deepcopy(signal))
        for dtc in official.BEYOND_README_DTCS:
            client.add_dtc(copy.deepcopy(dtc))
        client.add_gps(copy.deepcopy(official.BEYOND_README_GPS))
        client.add_network_stats(copy.deepcopy(official.BEYOND_README_NETSTATS))

    forward_through_the_worker(drive(tmp_path, feed), backend)

    expected = official.expected_beyond_readme(IDS, config_id(backend), message_ids(backend))
    assert_sent_as_the_official_client(backend, expected)


def test_the_comparison_tells_null_from_empty_and_int_from_float() -> None:
    """The check above can fail: it is strict about null, types and missing keys."""
    assert official.differences({"ecuId": None}, {"ecuId": ""}) == [
        ".ecuId: expected None (NoneType), sent '' (str)"]
    assert official.differences({"rate": 500.0}, {"rate": 500}) != []
    assert official.differences({"a": 1}, {"a": 1, "b": None}) != []
    assert official.differences([{"time": "2025-07-15T01:42:15.979524"}], [{"time": "2025-07-15T01:42:15.980Z"}]) != []
