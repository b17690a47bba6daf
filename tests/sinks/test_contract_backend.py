"""The local contract backend: it must accept what the contract allows and refuse everything else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fleetstream.sinks.graphql import payloads as p
from fleetstream.sinks.graphql.contract_backend import ContractBackend, start_backend

CONFIG = {"input": {"deviceId": 1, "fleetId": 2, "organizationId": 3, "vehicleId": 4}}


@pytest.fixture
def backend() -> Iterator[ContractBackend]:
    _, server = start_backend()
    yield server
    server.stop()


def post(backend: ContractBackend, query: str, variables: dict[str, Any] | None = None,
         token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(backend.url, json={"query": query, "variables": variables}, headers=headers)


def test_accepted_requests_are_recorded_with_ids_as_strings_of_integers(backend: ContractBackend) -> None:
    first = post(backend, p.CREATE_CONFIGURATION, CONFIG).json()["data"]["createConfiguration"]
    again = post(backend, p.CREATE_CONFIGURATION, CONFIG).json()["data"]["createConfiguration"]
    assert first["id"].isdigit() and first == again  # the same configuration keeps its id
    assert backend.counts["createConfiguration"] == 2 and backend.calls("createConfiguration") == [CONFIG, CONFIG]
    assert backend.requests[0].operation_name == "createConfiguration"


def test_messages_get_stable_ids_per_descriptor(backend: ContractBackend) -> None:
    message = {"name": "M", "networkName": "CAN1", "ecuName": "ECM", "arbId": "7E0"}
    other = {**message, "arbId": "7E8"}
    ids = [m["id"] for m in post(backend, p.CREATE_MESSAGE, {"input": {"messages": [message, other, message]}})
           .json()["data"]["createMessage"]]
    assert ids[0] == ids[2] != ids[1]


def test_document_that_does_not_validate_is_a_400_with_errors(backend: ContractBackend) -> None:
    response = post(backend, "mutation { createConfiguration(input: {deviceId: 1}) { id nope } }")
    assert response.status_code == 400
    messages = [e["message"] for e in response.json()["errors"]]
    assert any("nope" in m for m in messages) and any("fleetId" in m for m in messages)
    assert backend.requests == [] and backend.counts["rejected"] == 1


def test_syntax_error_and_non_json_are_400(backend: ContractBackend) -> None:
    assert post(backend, "mutation {").status_code == 400
    assert httpx.post(backend.url, content=b"{not json").status_code == 400


def test_variables_that_do_not_coerce_are_errors(backend: ContractBackend) -> None:
    bad = {"input": {"deviceId": "1", "fleetId": 2, "organizationId": 3, "vehicleId": 2**31}}
    response = post(backend, p.CREATE_CONFIGURATION, bad)
    body = response.json()
    assert response.status_code == 200 and body["data"] is None
    assert any("Int cannot represent" in e["message"] for e in body["errors"])
    assert backend.requests == []


def test_unknown_field_in_an_input_is_refused(backend: ContractBackend) -> None:
    stats = {"name": "CAN1", "vehicleId": 4, "totalMessages": 1, "matchedMessages": 1, "unmatchedMessages": 0,
             "errorMessages": 0, "longMessageParts": 0, "rate": 1.0}
    body = post(backend, p.CREATE_NETWORK_STATS, {"input": stats}).json()
    assert "'CreateNetworkStatsInput' not to include unknown field 'vehicleId'" in body["errors"][0]["message"]


def test_data_for_an_unknown_configuration_is_refused(backend: ContractBackend) -> None:
    body = post(backend, p.UPSERT_GPS_DATA, {"input": {"configurationId": "999", "data": []}}).json()
    assert body["errors"][0]["message"] == "Configuration 999 does not exist"
    assert backend.counts["upsertGpsData"] == 0


def test_introspection_probe_is_answered_from_the_contract(backend: ContractBackend) -> None:
    data = post(backend, p.DETECT_NETWORK_STATS_ID_FIELD).json()["data"]
    assert p.network_id_field(data) == "configurationId"
    assert "vehicleId" not in {f["name"] for f in data["__type"]["inputFields"]}


def test_bearer_token_is_required_when_configured() -> None:
    url, backend = start_backend(token="t0k")
    try:
        assert post(backend, p.CREATE_CONFIGURATION, CONFIG).status_code == 401
        assert post(backend, p.CREATE_CONFIGURATION, CONFIG, token="other").status_code == 401
        assert post(backend, p.CREATE_CONFIGURATION, CONFIG, token="t0k").status_code == 200
        assert backend.counts["unauthorized"] == 2 and backend.requests[0].authorization == "Bearer t0k"
        assert url == backend.url
    finally:
        backend.stop()


def test_told_to_fail_it_fails_that_many_requests_then_recovers(backend: ContractBackend) -> None:
    backend.fail_next(2, status=500)
    statuses = [post(backend, p.CREATE_CONFIGURATION, CONFIG).status_code for _ in range(3)]
    assert statuses == [500, 500, 200] and backend.counts["injected_failures"] == 2


def test_liveness_probe_answers_get(backend: ContractBackend) -> None:
    assert httpx.get(backend.url).json() == {"status": "ok"}
