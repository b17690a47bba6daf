"""API users and their keys, kept as the latest record per username on a compacted Kafka topic.

Why Kafka and not a second database: the cluster is already there, replicated and backed up; a compacted
topic keeps exactly the current record of every key forever, so "read it from the beginning" is a full,
consistent load. `fleetstream serve` loads it at start and then follows it, so a user added, disabled or
given a new password by `fleetstream users ...` (any host) takes effect in every serve process within a
poll interval, without a restart. A write counts only when the broker acknowledged it (acks=all).

Passwords are argon2id hashes (argon2-cffi's defaults). A login for an unknown user still verifies against
a dummy hash, so the response time does not tell which usernames exist.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from fleetstream.api.rbac import ALL_VEHICLES, Principal, Role
from fleetstream.api.tokens import ApiKeyParts, TokenError, digest_matches, new_api_key, parse_api_key, secret_digest
from fleetstream.config import KafkaSettings
from fleetstream.schemas.codec import Codec, DecodeError, serializer

__all__ = ["ApiKey", "User", "UserError", "UserStore", "hash_password"]

log = logging.getLogger(__name__)

RECORD_TYPE = "user_account"
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(uuid.uuid4().hex)


class UserError(ValueError):
    """A user command that cannot be done (unknown user, duplicate, bad role); the message says why."""


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise UserError("passwords have at least 8 characters")
    return _hasher.hash(password)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    secret_sha256: str
    created_ms: int
    revoked: bool = False


@dataclass(frozen=True)
class User:
    """One user as stored (the password only as its argon2 hash)."""

    username: str
    user_id: str
    org_id: str
    role: Role
    vehicle_ids: tuple[str, ...]
    password_hash: str = ""
    disabled: bool = False
    api_keys: tuple[ApiKey, ...] = ()
    updated_ms: int = field(default_factory=_now_ms)

    def principal(self, auth: str = "jwt") -> Principal:
        return Principal(self.user_id, self.username, self.role, self.org_id, self.vehicle_ids, auth)

    def to_record(self) -> dict[str, Any]:
        return {"username": self.username, "user_id": self.user_id, "org_id": self.org_id, "role": self.role.value,
                "vehicle_ids": list(self.vehicle_ids), "password_hash": self.password_hash,
                "disabled": self.disabled, "updated_ms": self.updated_ms,
                "api_keys": [{"key_id": k.key_id, "secret_sha256": k.secret_sha256, "created_ms": k.created_ms,
                              "revoked": k.revoked} for k in self.api_keys]}

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> User:
        return cls(r["username"], r["user_id"], r["org_id"], Role(r["role"]), tuple(r["vehicle_ids"]),
                   r["password_hash"], r["disabled"], tuple(ApiKey(**k) for k in r["api_keys"]), r["updated_ms"])

    def public(self) -> dict[str, Any]:
        """What `users list` and `/users/me` show: never hashes."""
        return {"username": self.username, "user_id": self.user_id, "org_id": self.org_id, "role": self.role.value,
                "vehicle_ids": list(self.vehicle_ids), "disabled": self.disabled,
                "api_keys": [k.key_id for k in self.api_keys if not k.revoked]}


class UserStore:
    """The users of every org, from the compacted topic; `load()` then `follow()` in a server, `load()` in the CLI."""

    def __init__(self, kafka: KafkaSettings, topic: str, codec: Codec | None = None):
        self._kafka = kafka
        self.topic = topic
        self._codec = codec or serializer(kafka.schema_registry_url)
        self._users: dict[str, User] = {}
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- the topic ------------------------------------------------------------------------------------------

    def ensure_topic(self, partitions: int = 1, replication_factor: int = 1, timeout_s: float = 30.0) -> None:
        """Create the compacted topic if missing; refuse one that would delete users by retention."""
        admin = AdminClient(self._kafka.client())
        if self.topic not in admin.list_topics(timeout=timeout_s).topics:
            new = NewTopic(self.topic, num_partitions=partitions, replication_factor=replication_factor,
                           config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
            try:
                admin.create_topics([new], operation_timeout=timeout_s)[self.topic].result()
                log.info("created compacted users topic %s", self.topic)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
        resource = ConfigResource(ConfigResource.Type.TOPIC, self.topic)
        configs = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
        policy = configs["cleanup.policy"].value
        if "compact" not in policy or "delete" in policy:
            raise UserError(f"topic {self.topic} has cleanup.policy={policy}; users need cleanup.policy=compact "
                            "(else retention deletes them)")

    def load(self, timeout_s: float = 30.0) -> int:
        """Read the topic from the beginning to its current end; returns the number of users."""
        consumer = self._new_consumer()
        metadata = consumer.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            consumer.close()
            raise UserError(f"users topic {self.topic} does not exist (run `fleetstream users add` first)")
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout_s)[1] for tp in partitions}
        consumer.assign(partitions)
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                consumer.close()
                raise TimeoutError(f"users topic {self.topic} not read to its end in {timeout_s} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            self._apply_message(message)
            offset, partition = message.offset(), message.partition()
            if message.error() is None and offset is not None and partition is not None \
                    and offset + 1 >= ends[partition]:
                pending.discard(partition)
        self._consumer = consumer
        return len(self._users)

    def follow(self, poll_s: float = 0.5) -> None:
        """Keep applying new records in a background thread (after `load`)."""
        assert self._consumer is not None, "load() first"
        consumer = self._consumer

        def run() -> None:
            while not self._stop.is_set():
                message = consumer.poll(poll_s)
                if message is not None:
                    self._apply_message(message)

        self._thread = threading.Thread(target=run, name="users-follow", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _new_consumer(self) -> Consumer:
        return Consumer(self._kafka.client(**{"group.id": f"fleetstream-users-{uuid.uuid4().hex[:8]}",
                                              "enable.auto.commit": False, "auto.offset.reset": "earliest"}))

    def _apply_message(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("users topic: %s", error)
            return
        try:
            user = User.from_record(self._codec.decode(message.value(), RECORD_TYPE))
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            # a record we cannot read must not lock everyone out; it is logged and skipped, never guessed at
            log.error("users topic %s offset %d: unreadable user record skipped: %s", message.topic(),
                      message.offset(), exc)
            return
        self._apply(user)

    def _apply(self, user: User) -> None:
        with self._lock:
            current = self._users.get(user.username)
            if current is None or user.updated_ms >= current.updated_ms:
                self._users[user.username] = user

    # --- reads ----------------------------------------------------------------------------------------------

    def get(self, username: str) -> User | None:
        with self._lock:
            return self._users.get(username)

    def by_user_id(self, user_id: str) -> User | None:
        with self._lock:
            return next((u for u in self._users.values() if u.user_id == user_id), None)

    def all(self) -> list[User]:
        with self._lock:
            return sorted(self._users.values(), key=lambda u: (u.org_id, u.username))

    def authenticate(self, username: str, password: str) -> User | None:
        """The enabled user with this password, else None (same work whether or not the user exists)."""
        user = self.get(username)
        stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None or user.disabled or not user.password_hash:
            return None
        return user

    def by_api_key(self, key: str) -> User | None:
        """The enabled user owning this (unrevoked) API key, else None."""
        try:
            parts: ApiKeyParts = parse_api_key(key)
        except TokenError:
            return None
        with self._lock:
            users = list(self._users.values())
        for user in users:
            for stored in user.api_keys:
                if stored.key_id == parts.key_id and not stored.revoked:
                    ok = digest_matches(parts.secret, stored.secret_sha256)
                    return user if ok and not user.disabled else None
        return None

    # --- writes ---------------------------------------------------------------------------------------------

    def put(self, user: User, timeout_s: float = 30.0) -> None:
        """Publish the user's new state and wait until the broker acknowledged it; then apply it here."""
        producer = Producer(self._kafka.client(**{"enable.idempotence": True, "acks": "all"}))
        errors: list[Any] = []
        producer.produce(self.topic, key=user.username.encode(), value=self._codec.encode(RECORD_TYPE,
                         user.to_record(), self.topic), on_delivery=lambda err, _msg: errors.append(err))
        remaining = producer.flush(timeout_s)
        if remaining or not errors or errors[0] is not None:
            raise UserError(f"user {user.username} not stored: {errors[0] if errors else 'no delivery report'}")
        self._apply(user)

    def add(self, username: str, password: str | None, org_id: str, role: Role, vehicle_ids: tuple[str, ...]) -> User:
        if self.get(username) is not None:
            raise UserError(f"user {username} exists (use `passwd` or `disable`)")
        if not username or not org_id:
            raise UserError("a user needs a username and an org id")
        scope = vehicle_ids or ((ALL_VEHICLES,) if role not in (Role.OWNER, Role.TECHNICIAN) else ())
        if not scope:
            raise UserError(f"a {role.value} needs --vehicle ids (their vehicles)")
        user = User(username, f"u_{uuid.uuid4().hex[:12]}", org_id, role, scope,
                    hash_password(password) if password else "")
        self.put(user)
        return user

    def _existing(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise UserError(f"no user {username}")
        return user

    def set_password(self, username: str, password: str) -> User:
        user = replace(self._existing(username), password_hash=hash_password(password), updated_ms=_now_ms())
        self.put(user)
        return user

    def set_disabled(self, username: str, disabled: bool = True) -> User:
        user = replace(self._existing(username), disabled=disabled, updated_ms=_now_ms())
        self.put(user)
        return user

    def add_api_key(self, username: str) -> tuple[str, User]:
        """A new API key for the user: the full key is returned once and never stored."""
        key, parts = new_api_key()
        current = self._existing(username)
        stored = ApiKey(parts.key_id, secret_digest(parts.secret), _now_ms())
        user = replace(current, api_keys=(*current.api_keys, stored), updated_ms=_now_ms())
        self.put(user)
        return key, user
