"""The read side's logic without services: tokens, roles, the scoped query layer, login throttling, cache."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from fleetstream.api.cache import TtlCache
from fleetstream.api.rbac import ROLE_PERMISSIONS, Permission, Principal, Role
from fleetstream.api.scoped import SOURCES, Scope, ScopedReader, ScopeError, expand
from fleetstream.api.store import QueryResult
from fleetstream.api.throttle import LoginThrottle
from fleetstream.api.tokens import TokenError, TokenIssuer, new_api_key, parse_api_key
from fleetstream.api.users import User

SECRET = "s" * 40
OWNER = Principal("u1", "olga", Role.OWNER, "acme", ("veh-1",))
MANAGER = Principal("u2", "fred", Role.FLEET_MANAGER, "acme", ("*",))


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any]) -> str:
    """An `alg: none` token, as an attacker writes it (header, payload, empty signature)."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def test_token_carries_the_seed_claims_and_verifies() -> None:
    issuer = TokenIssuer(SECRET, ttl_s=600)
    token, exp = issuer.issue(OWNER)
    claims = issuer.verify(token)
    assert {k: claims[k] for k in ("user_id", "role", "org_id", "vehicle_ids", "exp")} == {
        "user_id": "u1", "role": "owner", "org_id": "acme", "vehicle_ids": ["veh-1"], "exp": exp}
    assert set(claims["permissions"]) == {p.value for p in ROLE_PERMISSIONS[Role.OWNER]}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_expired_forged_and_unsigned_tokens_are_refused() -> None:
    issuer = TokenIssuer(SECRET, ttl_s=60)
    expired, _ = issuer.issue(OWNER, now_s=time.time() - 3600)
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(expired)
    forged = jwt.encode({**_claims(issuer.issue(OWNER)[0]), "role": "admin"}, "another secret" * 4, algorithm="HS256")
    with pytest.raises(TokenError, match="signature"):
        issuer.verify(forged)
    unsigned = unsigned_token({**_claims(issuer.issue(OWNER)[0]), "role": "admin"})
    with pytest.raises(TokenError):
        issuer.verify(unsigned)
    with pytest.raises(TokenError):
        issuer.verify("not.a.token")


def test_rotated_key_keeps_old_tokens_valid_until_they_expire() -> None:
    old = TokenIssuer("old" * 12)
    token, _ = old.issue(MANAGER)
    assert TokenIssuer("new" * 12, previous_secrets=("old" * 12,)).verify(token)["user_id"] == "u2"
    with pytest.raises(TokenError):
        TokenIssuer("new" * 12).verify(token)


def test_api_keys_parse_and_reject_malformed() -> None:
    key, parts = new_api_key()
    assert parse_api_key(key) == parts and len(parts.secret) >= 40
    for bad in ("", "fsk_", "fsk_abc", "xyz_abc_def", "Bearer fsk_a_b"):
        with pytest.raises(TokenError):
            parse_api_key(bad)


def test_every_role_has_its_seed_permissions() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert Permission.AUDIT_READ not in ROLE_PERMISSIONS[Role.FLEET_MANAGER]
    assert Permission.ALERTS_ACKNOWLEDGE not in ROLE_PERMISSIONS[Role.SUPPORT]  # read-only
    assert Permission.REPORTS_GENERATE not in ROLE_PERMISSIONS[Role.SUPPORT]
    assert ROLE_PERMISSIONS[Role.OWNER] & {Permission.DASHBOARD_FLEET, Permission.METRICS_READ} == frozenset()


def test_user_record_round_trips_without_exposing_hashes() -> None:
    user = User("olga", "u1", "acme", Role.OWNER, ("veh-1",), "$argon2id$hash")
    assert User.from_record(user.to_record()) == user
    assert "hash" not in json.dumps(user.public())


# --- the scoped query layer ---------------------------------------------------------------------------------


class RecordingReader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def query(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        self.calls.append((sql, parameters))
        return QueryResult(["n"], ["UInt64"], [[1]])


def test_every_source_is_filtered_by_the_bound_org() -> None:
    for name, subquery in SOURCES.items():
        assert "{__orgs:Array(String)}" in subquery, name
        # org-wide records: the audit trail and the org's metric and segment definitions
        assert "{__all:UInt8}" in subquery or name in ("audit_log", "definitions"), name


def test_the_layer_binds_the_callers_scope_and_never_formats_it_into_the_sql() -> None:
    recording = RecordingReader()
    reader = ScopedReader(recording)  # type: ignore[arg-type]
    evil = Principal("u9", "eve", Role.OWNER, "acme' OR 1=1 --", ("veh' OR '1'='1",))
    reader.run("SELECT count() FROM @samples WHERE channel = {c:String}", {"c": "x"}, evil)
    sql, params = recording.calls[0]
    assert "acme'" not in sql and "veh'" not in sql and "@" not in sql
    assert params == {"c": "x", "__orgs": ["acme' OR 1=1 --"], "__vehicles": ["veh' OR '1'='1"], "__all": 0}


def test_the_layer_refuses_statements_that_read_around_the_scope() -> None:
    reader = ScopedReader(RecordingReader())  # type: ignore[arg-type]
    for sql in ("SELECT * FROM fleetstream.samples", "SELECT * FROM system.tables",
                "SELECT * FROM @samples UNION ALL SELECT * FROM fleetstream . kpis",
                "SELECT * FROM url('http://x', CSV)", "SELECT 1", "SELECT * FROM @nothing"):
        with pytest.raises(ScopeError):
            reader.run(sql, {}, MANAGER)
    with pytest.raises(ScopeError, match="reserved"):
        reader.run("SELECT * FROM @samples", {"__orgs": ["other"]}, MANAGER)


def test_default_org_owns_records_without_an_org() -> None:
    assert Scope.of(MANAGER, default_org="acme").orgs == ("acme", "")
    assert Scope.of(MANAGER, default_org="other").orgs == ("acme",)
    assert Scope.of(MANAGER).orgs == ("acme",)
    assert Scope.of(OWNER).parameters()["__all"] == 0 and Scope.of(MANAGER).parameters()["__all"] == 1


def test_expand_replaces_every_source() -> None:
    assert "fleetstream.kpis" in expand("SELECT * FROM @kpis k JOIN @alerts a ON k.vehicle_id = a.key")


# --- throttle and cache ---------------------------------------------------------------------------------


def test_failed_logins_beyond_the_free_ones_must_wait_longer_and_longer() -> None:
    now = [1000.0]
    throttle = LoginThrottle(free_failures=3, max_delay_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait_s("olga", "10.0.0.1") == 0
        throttle.failed("olga", "10.0.0.1")
    assert throttle.wait_s("olga", "10.0.0.1") == pytest.approx(1.0)
    assert throttle.wait_s("olga", "10.0.0.2") == pytest.approx(1.0)  # same user from elsewhere
    assert throttle.wait_s("fred", "10.0.0.1") == pytest.approx(1.0)  # other users from the same client
    now[0] += 1.5
    throttle.failed("olga", "10.0.0.1")
    assert throttle.wait_s("olga", "10.0.0.9") == pytest.approx(2.0)
    for _ in range(20):
        throttle.failed("olga", "10.0.0.1")
    assert throttle.wait_s("olga", "10.0.0.9") == pytest.approx(60.0)
    throttle.succeeded("olga")
    assert throttle.wait_s("olga", "10.0.0.9") == 0


def test_cache_answers_within_its_ttl_and_refresh_recomputes() -> None:
    now = [0.0]
    cache = TtlCache(300, clock=lambda: now[0])
    calls = iter(range(100))
    assert cache.get_or_compute(("k",), lambda: next(calls)) == (0, False)
    assert cache.get_or_compute(("k",), lambda: next(calls)) == (0, True)
    assert cache.get_or_compute(("k",), lambda: next(calls), refresh=True) == (1, False)
    now[0] = 301
    assert cache.get_or_compute(("k",), lambda: next(calls)) == (2, False)
    assert cache.get_or_compute(("other",), lambda: next(calls)) == (3, False)


def test_concurrent_misses_of_one_key_compute_once() -> None:
    import threading

    cache = TtlCache(300)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        started.set()
        release.wait(10)
        return 42

    results: list[tuple[Any, bool]] = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_compute(("dash",), slow)))
    first.start()
    started.wait(10)
    waiters = [threading.Thread(target=lambda: results.append(cache.get_or_compute(("dash",), slow)))
               for _ in range(5)]
    for t in waiters:
        t.start()
    release.set()
    for t in (first, *waiters):
        t.join(10)
    assert len(calls) == 1
    assert sorted(results, key=lambda r: r[1]) == [(42, False)] + [(42, True)] * 5


def test_a_failed_computation_fails_its_waiters_and_is_not_cached() -> None:
    cache = TtlCache(300)

    def broken() -> int:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        cache.get_or_compute(("k",), broken)
    assert cache.get_or_compute(("k",), lambda: 7) == (7, False)
