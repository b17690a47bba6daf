"""Versioned DDL: `sinks/migrations/NNN_name.sql` applied in order and recorded in `schema_migrations`.

ClickHouse DDL is not transactional, so every statement is written to be re-runnable (`IF NOT EXISTS`): a
migration interrupted half-way is simply applied again. A migration is recorded only after all its
statements succeeded. The checksum of the file (before `${...}` substitution, so changing the retention
setting does not invalidate history) guards against editing a migration that already ran: change the
schema with a new migration instead.

Server differences: `sink_offsets` uses EmbeddedRocksDB (a key-value table overwritten in place), which chDB
and the standard server builds have but some deployments (ClickHouse Cloud, minimal builds) do not. When the
engine is unknown, its statement is re-run with `ReplacingMergeTree(updated_at) ORDER BY <primary key>`,
which keeps one row per key after merges; `OffsetStore.load` reads the newest row per key with `argMax`, so
it is exact on either engine before any merge. The history records the file as applied either way (the
checksum is of the file), and `status` does not care which engine was chosen.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fleetstream.errors import StoreError
from fleetstream.store.client import DATABASE, Client

__all__ = [
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "fallback_statement",
    "load_migrations",
    "migrate",
    "status",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_FILE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_ENGINE_FALLBACKS: dict[str, tuple[re.Pattern[str], str]] = {
    "EmbeddedRocksDB": (re.compile(r"ENGINE\s*=\s*EmbeddedRocksDB(?:\(\))?\s+PRIMARY\s+KEY\s+(\w+)", re.I),
                        r"ENGINE = ReplacingMergeTree(updated_at) ORDER BY \1"),
}
"""Engine → (its clause, the replacement) for stores that lack the engine; the table must have `updated_at`."""


class MigrationError(StoreError, RuntimeError):
    """The migration history and the files disagree (edited, missing or misnamed migration)."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str
    checksum: str

    def statements(self, variables: dict[str, str]) -> list[str]:
        """The file's statements with `${name}` placeholders filled in, comments dropped."""
        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in variables:
                raise MigrationError(f"migration {self.version:03d}_{self.name}: no value for ${{{match.group(1)}}}")
            return variables[match.group(1)]

        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in _PLACEHOLDER.sub(fill, body).split(";") if s.strip()]


@dataclass(frozen=True)
class MigrationStatus:
    """One migration as `fleetstream db status` shows it."""

    version: int
    name: str
    applied_at: datetime | None

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file in version order; misnamed files and duplicate versions are errors."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version, text = int(match.group(1)), path.read_text()
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match.group(2), text, hashlib.sha256(text.encode()).hexdigest())
    return [found[v] for v in sorted(found)]


def _ensure_history(client: Client) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )


def _applied(client: Client) -> dict[int, tuple[str, str, datetime]]:
    rows = client.query(f"SELECT version, name, checksum, applied_at FROM {DATABASE}.schema_migrations").result_rows
    return {int(r[0]): (r[1], r[2], r[3]) for r in rows}


def _check_history(migrations: list[Migration], applied: dict[int, tuple[str, str, datetime]]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum, _) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"migration {version:03d}_{name} was applied but its file is missing")
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {version:03d}_{name} was changed after it was applied "
                f"(checksum {checksum[:12]} in the store, {migration.checksum[:12]} on disk); add a new migration"
            )


def status(client: Client, migrations: list[Migration] | None = None) -> list[MigrationStatus]:
    """Every known migration with when it was applied (None = pending); raises on an edited migration."""
    migrations = load_migrations() if migrations is None else migrations
    _ensure_history(client)
    applied = _applied(client)
    _check_history(migrations, applied)
    return [MigrationStatus(m.version, m.name, applied[m.version][2] if m.version in applied else None)
            for m in migrations]


def fallback_statement(statement: str, engine: str) -> str:
    """`statement` with `engine` replaced by its fallback (ValueError when it has no such engine clause)."""
    pattern, replacement = _ENGINE_FALLBACKS[engine]
    replaced, n = pattern.subn(replacement, statement)
    if n != 1:
        raise ValueError(f"no {engine} clause in: {statement[:80]}")
    return replaced


def _unknown_engine(statement: str, exc: Exception) -> str | None:
    message = str(exc)
    for engine in _ENGINE_FALLBACKS:
        if re.search(rf"ENGINE\s*=\s*{engine}\b", statement, re.I) and (
                "UNKNOWN_STORAGE" in message or f"Unknown table engine {engine}" in message):
            return engine
    return None


def _execute(client: Client, statement: str, unavailable_engines: frozenset[str]) -> None:
    for engine in unavailable_engines & _ENGINE_FALLBACKS.keys():
        if re.search(rf"ENGINE\s*=\s*{engine}\b", statement, re.I):
            statement = fallback_statement(statement, engine)
    try:
        client.command(statement)
    except Exception as exc:
        missing = _unknown_engine(statement, exc)
        if missing is None:
            raise
        log.warning("this ClickHouse has no %s engine; using its fallback", missing)
        client.command(fallback_statement(statement, missing))


def migrate(client: Client, retention_days: int = 365, migrations: list[Migration] | None = None,
            unavailable_engines: frozenset[str] = frozenset()) -> list[Migration]:
    """Apply the pending migrations in order; returns those applied (empty when up to date).

    `unavailable_engines` forces the fallback of those engines (tests, or a store known to lack them);
    an engine the store reports as unknown falls back anyway.
    """
    migrations = load_migrations() if migrations is None else migrations
    _ensure_history(client)
    applied = _applied(client)
    _check_history(migrations, applied)
    variables = {"retention_days": str(int(retention_days))}
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements(variables):
            _execute(client, statement, unavailable_engines)
        client.insert(f"{DATABASE}.schema_migrations", [[migration.version, migration.name, migration.checksum]],
                      column_names=["version", "name", "checksum"])
        log.info("applied migration %03d_%s", migration.version, migration.name)
        done.append(migration)
    return done
