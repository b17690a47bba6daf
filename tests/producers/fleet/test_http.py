"""The shared client: retries (5xx, 429, network) with Retry-After honoured, fail-fast 4xx, secrets hidden."""

from __future__ import annotations

import logging
import random
import ssl
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from fleetstream.producers.fleet.errors import (
    AuthError,
    MalformedResponseError,
    RequestRejectedError,
    RetriesExhaustedError,
)
from fleetstream.producers.fleet.http import ApiClient, HttpSettings, backoff_delay_s, parse_retry_after_s, tls_verify
from fleetstream.producers.fleet.motive import MotiveClient, motive_settings
from fleetstream.producers.fleet.samsara import SamsaraClient, samsara_settings
from tests.producers.fleet.conftest import RecordingSleep, fixture

BASE = "https://api.example.test"
SECRET = "s3cr3t-token-value"


def client(sleep: RecordingSleep, **settings: object) -> ApiClient:
    options: dict = {"rate_per_s": 1000.0, "burst": 1000, "max_retries": 3, **settings}
    return ApiClient("samsara", HttpSettings(base_url=BASE, **options), "Authorization", f"Bearer {SECRET}",
                     sleep=sleep, clock=sleep.clock, rng=random.Random(7))


@respx.mock
def test_429_waits_the_fractional_retry_after_then_succeeds(sleep: RecordingSleep) -> None:
    route = respx.get(f"{BASE}/fleet/vehicles").mock(side_effect=[
        httpx.Response(429, json=fixture("samsara_openapi_examples/error_429__spec_example.json"),
                       headers={"Retry-After": "0.40235"}),
        httpx.Response(200, json={"data": []}),
    ])
    assert client(sleep).get_json("vehicles", "/fleet/vehicles") == {"data": []}
    assert route.call_count == 2
    assert sleep.waits == [pytest.approx(0.40235)]


@respx.mock
def test_5xx_with_plain_text_body_is_retried_with_jittered_backoff(sleep: RecordingSleep) -> None:
    respx.get(f"{BASE}/x").mock(side_effect=[httpx.Response(502, text="upstream connect error"),
                                             httpx.Response(503, text="busy"), httpx.Response(200, json=[1])])
    api = client(sleep, backoff_base_s=1.0)
    assert api.get_json("x", "/x") == [1]
    assert len(sleep.waits) == 2
    assert 0.0 <= sleep.waits[0] <= 1.0 and 0.0 <= sleep.waits[1] <= 2.0
    assert api.retries == 2


@respx.mock
def test_network_errors_are_retried(sleep: RecordingSleep) -> None:
    respx.get(f"{BASE}/x").mock(side_effect=[httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                             httpx.Response(200, json={"ok": True})])
    assert client(sleep).get_json("x", "/x") == {"ok": True}
    assert len(sleep.waits) == 2


@respx.mock
def test_retry_budget_exhausted_names_provider_endpoint_and_last_failure(sleep: RecordingSleep) -> None:
    route = respx.get(f"{BASE}/x").mock(return_value=httpx.Response(500, json={"message": "boom"}))
    with pytest.raises(RetriesExhaustedError) as caught:
        client(sleep, max_retries=2).get_json("vehicle_stats", "/x")
    assert route.call_count == 3
    assert caught.value.provider == "samsara" and caught.value.endpoint == "vehicle_stats"
    assert "HTTP 500: boom" in str(caught.value)


@respx.mock
def test_a_huge_retry_after_is_capped(sleep: RecordingSleep) -> None:
    respx.get(f"{BASE}/x").mock(side_effect=[httpx.Response(429, headers={"Retry-After": "86400"}),
                                             httpx.Response(200, json={})])
    client(sleep, max_retry_after_s=30.0).get_json("x", "/x")
    assert sleep.waits == [30.0]


@respx.mock
def test_401_fails_at_once_with_the_providers_message(sleep: RecordingSleep) -> None:
    route = respx.get(f"{BASE}/v1/users").mock(
        return_value=httpx.Response(401, json={"error_message": "invalid API key"}))
    with pytest.raises(AuthError, match="invalid API key"):
        client(sleep).get_json("users", "/v1/users")
    assert route.call_count == 1 and sleep.waits == []


@respx.mock
def test_other_4xx_are_rejected_without_retry(sleep: RecordingSleep) -> None:
    body = fixture("fleetpull/motive_driving_periods__driving_periods_range_error.json")
    respx.get(f"{BASE}/x").mock(return_value=httpx.Response(400, json=body))
    with pytest.raises(RequestRejectedError, match="Date range cannot be greater than 30 days") as caught:
        client(sleep).get_json("x", "/x")
    assert caught.value.status_code == 400 and sleep.waits == []


@respx.mock
def test_a_non_json_success_body_is_malformed(sleep: RecordingSleep) -> None:
    respx.get(f"{BASE}/x").mock(return_value=httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(MalformedResponseError, match="samsara x: malformed response at field '<body>'"):
        client(sleep).get_json("x", "/x")


@respx.mock
def test_client_side_rate_limit_spaces_requests(sleep: RecordingSleep) -> None:
    respx.get(f"{BASE}/x").mock(return_value=httpx.Response(200, json={}))
    api = client(sleep, rate_per_s=2.0, burst=1)
    for _ in range(5):
        api.get_json("x", "/x")
    assert sum(sleep.waits) == pytest.approx(2.0)


@respx.mock
def test_auth_headers_per_provider() -> None:
    motive = respx.get("https://api.gomotive.com/v1/users").mock(return_value=httpx.Response(
        200, json={"users": [], "pagination": {"per_page": 100, "page_no": 1, "total": 0}}))
    samsara = respx.get("https://api.samsara.com/fleet/drivers").mock(return_value=httpx.Response(
        200, json={"data": [], "pagination": {"endCursor": "", "hasNextPage": False}}))
    MotiveClient("mk", motive_settings()).users()
    SamsaraClient("st", samsara_settings()).drivers()
    assert motive.calls.last.request.headers["X-Api-Key"] == "mk"
    assert samsara.calls.last.request.headers["Authorization"] == "Bearer st"


@respx.mock
def test_tokens_never_appear_in_reprs_logs_or_errors(sleep: RecordingSleep, caplog: pytest.LogCaptureFixture) -> None:
    respx.get(f"{BASE}/x").mock(side_effect=[httpx.Response(503, text="down")] * 4)
    api = client(sleep)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RetriesExhaustedError) as caught:
        api.get_json("x", "/x")
    samsara = SamsaraClient(SECRET, samsara_settings())
    motive = MotiveClient(SECRET, motive_settings())
    for text in (repr(api), repr(samsara), repr(motive), str(caught.value), caplog.text):
        assert SECRET not in text
    assert "**********" in repr(api)


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after_s("0.40235") == pytest.approx(0.40235)
    assert parse_retry_after_s("3") == 3.0
    assert parse_retry_after_s("Thu, 01 Jan 2026 12:00:05 GMT", now) == pytest.approx(5.0)
    assert parse_retry_after_s("-2") == 0.0
    assert parse_retry_after_s(None) is None
    assert parse_retry_after_s("soon") is None


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        delays = [backoff_delay_s(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert min(delays) >= 0.0 and max(delays) <= min(10.0, 0.5 * 2**attempt)
        assert max(delays) > 0.5 * min(10.0, 0.5 * 2**attempt)  # spread, not a constant


def test_tls_options(tmp_path: Path) -> None:
    assert tls_verify(HttpSettings(base_url=BASE)) is True
    assert tls_verify(HttpSettings(base_url=BASE, verify_tls=False)) is False
    assert isinstance(tls_verify(HttpSettings(base_url=BASE, use_truststore=True)), ssl.SSLContext)
    with pytest.raises(FileNotFoundError):
        tls_verify(HttpSettings(base_url=BASE, ca_bundle=tmp_path / "missing.pem"))
    import certifi
    assert isinstance(tls_verify(HttpSettings(base_url=BASE, ca_bundle=Path(certifi.where()))), ssl.SSLContext)
