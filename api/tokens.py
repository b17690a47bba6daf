"""JWTs for people (HS256) and API keys for machines.

A token carries seed 003's claims (`user_id`, `role`, `permissions`, `vehicle_ids`, `exp`) plus `org_id`
and `sub` (the username). Verification accepts only the configured algorithm, so `alg: none` and tokens
signed with another algorithm are refused by PyJWT itself. Keys rotate by moving the current secret to
`previous_secrets`: tokens it signed stay valid until they expire, new ones use the new secret.

API keys are `fsk_<key id>_<secret>` with a 256-bit random secret. Only the secret's SHA-256 is stored:
a slow password hash buys nothing against a guess space of 2^256 and would cost every machine request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from fleetstream.api.rbac import Principal, Role

__all__ = ["ApiKeyParts", "TokenError", "TokenIssuer", "digest_matches", "new_api_key", "parse_api_key",
           "secret_digest"]

_API_KEY_PREFIX = "fsk_"


class TokenError(ValueError):
    """The token or key is missing, malformed, expired or not signed by us; the message is safe to return."""


@dataclass(frozen=True)
class TokenIssuer:
    """Signs and verifies the API's JWTs."""

    secret: str
    previous_secrets: tuple[str, ...] = ()
    ttl_s: int = 3600
    algorithm: str = "HS256"

    def issue(self, principal: Principal, now_s: float | None = None) -> tuple[str, int]:
        """A token for `principal` and its expiry (epoch seconds)."""
        now = int(now_s if now_s is not None else time.time())
        exp = now + self.ttl_s
        claims = {
            "sub": principal.username, "user_id": principal.user_id, "role": principal.role.value,
            "permissions": sorted(p.value for p in principal.permissions), "org_id": principal.org_id,
            "vehicle_ids": list(principal.vehicle_ids), "iat": now, "exp": exp, "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=self.algorithm), exp

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; TokenError otherwise (expired, forged, wrong algorithm, claims missing)."""
        last: Exception | None = None
        for secret in (self.secret, *self.previous_secrets):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, secret, algorithms=[self.algorithm],
                    options={"require": ["exp", "sub", "user_id", "role", "org_id", "vehicle_ids"]})
            except jwt.ExpiredSignatureError as exc:
                raise TokenError("token expired") from exc
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.PyJWTError as exc:
                raise TokenError(f"invalid token: {exc}") from exc
            try:
                Role(claims["role"])
            except ValueError as exc:
                raise TokenError("invalid token: unknown role") from exc
            return claims
        raise TokenError("invalid token: signature does not verify") from last


@dataclass(frozen=True)
class ApiKeyParts:
    key_id: str
    secret: str


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> tuple[str, ApiKeyParts]:
    """A new key as the user receives it (shown once) and its parts."""
    parts = ApiKeyParts(secrets.token_hex(6), secrets.token_urlsafe(32))
    return f"{_API_KEY_PREFIX}{parts.key_id}_{parts.secret}", parts


def parse_api_key(key: str) -> ApiKeyParts:
    if not key.startswith(_API_KEY_PREFIX):
        raise TokenError("not an API key")
    key_id, sep, secret = key.removeprefix(_API_KEY_PREFIX).partition("_")
    if not sep or not key_id or not secret:
        raise TokenError("malformed API key")
    return ApiKeyParts(key_id, secret)


def digest_matches(secret: str, stored_hex: str) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    return hmac.compare_digest(secret_digest(secret), stored_hex)
