"""The Avro schemas in `schemas/avro/`, loaded once and found by name or fingerprint.

Each record type has a folder with one file per version (`v1.avsc`, `v2.avsc`, ...). Writers always use
the latest version; readers resolve any older writer version against it, which is why every version
must stay backward and forward compatible with the one before (tested in tests/schemas).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from fleetstream.schemas import sample_arrays

__all__ = [
    "AVRO_DIR",
    "SchemaVersion",
    "by_fingerprint",
    "history",
    "latest",
    "record_types",
]

AVRO_DIR = Path(__file__).parent / "avro"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one record type, parsed and fingerprinted."""

    record_type: str
    version: int
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, 8 bytes little-endian, as single-object encoding writes it."""
    head: Any = None
    """With a samples array `fleetstream.schemas.sample_arrays` can read and write (signal batches): the parsed schema
    of the
    fields before it, so fastavro reads those and stops where the samples begin."""
    sample_tail: tuple[str, ...] = ()
    """With `head`: the sample's optional fields after `flags` (`sample_arrays.sample_tail`)."""

    @property
    def full_name(self) -> str:
        return f"{self.raw['namespace']}.{self.raw['name']}"


def _head(raw: dict[str, Any]) -> Any:
    """The record without its last field (parsed on its own, so its named types do not clash)."""
    return fastavro.parse_schema({**raw, "fields": raw["fields"][:-1]}, named_schemas={})


def _load(path: Path, record_type: str) -> SchemaVersion:
    raw = json.loads(path.read_text())
    # The canonical form (for the fingerprint) needs a plain parse; readers and writers need fastavro's
    # parsed-schema marker, without which every encode and decode parses the schema again.
    canonical = to_parsing_canonical_form(fastavro.parse_schema(raw, _write_hint=False))
    parsed = fastavro.parse_schema(raw)
    # fastavro's hex string already lists the bytes little-endian, the order single-object encoding writes.
    rabin_le = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    tail = sample_arrays.sample_tail(raw)
    return SchemaVersion(
        record_type=record_type,
        version=int(path.stem.removeprefix("v")),
        raw=raw,
        parsed=parsed,
        fingerprint=rabin_le,
        head=_head(raw) if tail is not None else None,
        sample_tail=tail or (),
    )


@cache
def _all() -> dict[str, list[SchemaVersion]]:
    out: dict[str, list[SchemaVersion]] = {}
    for folder in sorted(p for p in AVRO_DIR.iterdir() if p.is_dir()):
        versions = [_load(f, folder.name) for f in folder.glob("v*.avsc")]
        out[folder.name] = sorted(versions, key=lambda v: v.version)
    return out


def record_types() -> list[str]:
    """Names of all record types (the folder names: signal_batch, dead_letter, ...)."""
    return list(_all())


def history(record_type: str) -> list[SchemaVersion]:
    """Every version of a record type, oldest first."""
    try:
        return _all()[record_type]
    except KeyError:
        raise KeyError(f"unknown record type {record_type!r}; known: {', '.join(_all())}") from None


def latest(record_type: str) -> SchemaVersion:
    """The version writers use."""
    return history(record_type)[-1]


@cache
def _fingerprints() -> dict[bytes, SchemaVersion]:
    return {v.fingerprint: v for versions in _all().values() for v in versions}


def by_fingerprint(fp: bytes) -> SchemaVersion | None:
    """The schema a single-object-encoded message names, or None if it is not one of ours."""
    return _fingerprints().get(fp)
