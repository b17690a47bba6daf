"""A tenant's named definitions (custom metrics, segments): published on Kafka, stored by the sink, read back.

Writes go to the definitions topic (acknowledged by the broker before the API answers) and reach
`analytics_definitions` through the ClickHouse sink, where the latest `updated_ms` per (org, kind, name)
wins. Between the broker's acknowledgement and the sink's next batch the store does not have the new
version yet, so this process also remembers what it wrote: a definition created and used at once (define a
metric, record its first value) is found, and the newer of the two versions is the one answered.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from fleetstream.api.publish import Publisher
from fleetstream.api.rbac import Principal
from fleetstream.api.scoped import ScopedReader

__all__ = ["DefinitionStore"]

_Key = tuple[str, str, str]
"""(org, kind, name)."""


class DefinitionStore:
    def __init__(self, reader: ScopedReader, publisher: Publisher | None, topic: str, max_recent: int = 10_000):
        self._reader = reader
        self._publisher = publisher
        self._topic = topic
        self._max_recent = max_recent
        self._recent: dict[_Key, tuple[int, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def put(self, who: Principal, kind: str, name: str, body: dict[str, Any] | None) -> int:
        """Publish a definition (None deletes it) and wait for the broker; returns its updated_ms."""
        if self._publisher is None:
            raise RuntimeError("this server does not publish (no Kafka producer)")
        updated_ms = int(time.time() * 1000)
        record = {"org_id": who.org_id, "kind": kind, "name": name, "body_json": json.dumps(body or {}),
                  "deleted": body is None, "updated_ms": updated_ms, "updated_by": who.user_id}
        self._publisher.send_confirmed(self._topic, "analytics_definition", who.org_id, record)
        with self._lock:
            self._recent[(who.org_id, kind, name)] = (updated_ms, body)
            while len(self._recent) > self._max_recent:
                self._recent.pop(next(iter(self._recent)))
        return updated_ms

    def get(self, who: Principal, kind: str, name: str) -> dict[str, Any] | None:
        stored = self._stored(who, kind, name)
        return self._newest(stored.get(name), self._recent.get((who.org_id, kind, name)))

    def all(self, who: Principal, kind: str) -> dict[str, dict[str, Any]]:
        """Every live definition of `kind` in the caller's org, by name."""
        stored = self._stored(who, kind, None)
        with self._lock:
            recent = {k[2]: v for k, v in self._recent.items() if k[0] == who.org_id and k[1] == kind}
        out = {}
        for name in sorted(stored.keys() | recent.keys()):
            body = self._newest(stored.get(name), recent.get(name))
            if body is not None:
                out[name] = body
        return out

    @staticmethod
    def _newest(stored: tuple[int, dict[str, Any] | None] | None,
                recent: tuple[int, dict[str, Any] | None] | None) -> dict[str, Any] | None:
        candidates = [c for c in (stored, recent) if c is not None]
        return max(candidates, key=lambda c: c[0])[1] if candidates else None

    def _stored(self, who: Principal, kind: str, name: str | None) -> dict[str, tuple[int, dict[str, Any] | None]]:
        rows = self._reader.rows("""
            SELECT name, toUnixTimestamp64Milli(updated_at) AS updated_ms, body, deleted FROM @definitions
            WHERE kind = {kind:String} AND ({name:String} = '' OR name = {name:String})""",
                                 {"kind": kind, "name": name or ""}, who)
        return {r["name"]: (int(r["updated_ms"]), None if r["deleted"] else json.loads(r["body"])) for r in rows}
