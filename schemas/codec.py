"""Avro framing for Kafka messages: single-object encoding by default, Confluent wire format with a registry.

Single-object encoding (`C3 01`, 8-byte little-endian CRC-64-AVRO fingerprint, body) needs no registry:
the fingerprint names one of the schemas shipped in `schemas/avro/`. With a Schema Registry URL the
Confluent framing (`00`, 4-byte big-endian schema id, body) is written instead, the id obtained once per
schema from confluent-kafka's registry client. Readers accept both framings whatever they write.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from functools import cache
from typing import Any

import fastavro
import numpy as np

from fleetstream.schemas import registry, sample_arrays
from fleetstream.schemas.sample_batch import SAMPLE_BATCH_TYPES, SampleBatch

__all__ = ["SINGLE_OBJECT_MARKER", "Codec", "DecodeError", "SampleBatch", "decode", "encode"]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
_CONFLUENT_MAGIC = 0


class DecodeError(ValueError):
    """The bytes are not a record this codec can read; the message says why (for the dead letter)."""


def _write_body(version: registry.SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    samples = (sample_arrays.encode_samples(record["samples"], version.sample_tail)
               if version.head and record.get("samples") else None)
    if samples is None:
        fastavro.schemaless_writer(buf, version.parsed, record)
        return buf.getvalue()
    # samples is the last field: write the others with an empty array, then put the samples in its place.
    fastavro.schemaless_writer(buf, version.parsed, {**record, "samples": ()})
    return buf.getvalue()[:-1] + samples


def _write_batch_body(version: registry.SchemaVersion, batch: SampleBatch) -> bytes:
    """A batch straight from its columns when its samples are the fixed-width numeric rows, else via fastavro."""
    numeric = version.head is not None and batch.svalue is None and not batch.tail and bool(batch.has_value.all())
    samples = sample_arrays.encode_columns(batch.timestamp_ms, batch.value,
                                           batch.flags if batch.flags.any() else None,
                                           len(version.sample_tail)) if numeric else None
    if samples is None:
        return _write_body(version, batch.to_record())
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, {**batch.fields, "samples": ()})
    return buf.getvalue()[:-1] + samples


@cache
def serializer(schema_registry_url: str | None = None) -> Codec:
    """The process's one Avro serializer for a cluster: Confluent framing with `schema_registry_url`, else
    single-object encoding; it reads both. Edge, worker and sinks all take it from here with their
    `KafkaSettings.schema_registry_url`, so they frame alike (a worker reading only single-object framing
    dead-lettered every registry-framed edge message). One per URL and process: its schema-id cache is shared."""
    return Codec(schema_registry_url)


def encode(record_type: str, record: dict[str, Any]) -> bytes:
    """Single-object-encode a record with the latest schema of its type."""
    latest = registry.latest(record_type)
    return SINGLE_OBJECT_MARKER + latest.fingerprint + _write_body(latest, record)


def decode(data: bytes, record_type: str | None = None) -> dict[str, Any]:
    """Decode a single-object-encoded message, resolved to the latest schema of its type.

    With `record_type`, a message of another type is an error (a producer wrote to the wrong topic).
    """
    if len(data) < 10 or data[:2] != SINGLE_OBJECT_MARKER:
        raise DecodeError(f"not Avro single-object encoding (starts with {data[:2].hex() or 'nothing'})")
    writer = registry.by_fingerprint(data[2:10])
    if writer is None:
        raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
    return _read_body(data, 10, writer, record_type)


def _read_body(data: bytes, start: int, writer: registry.SchemaVersion, record_type: str | None) -> Any:
    if record_type is not None and writer.record_type != record_type:
        raise DecodeError(f"expected a {record_type} record, got {writer.record_type} v{writer.version}")
    reader = registry.latest(writer.record_type)
    # Resolution against a reader schema costs about half the decode time, so skip it when nothing differs.
    reader_schema = None if reader is writer else reader.parsed
    try:
        record = _read_with_fast_samples(data, start, writer) if reader is writer and writer.head else None
        if record is not None:
            return record
        return fastavro.schemaless_reader(io.BytesIO(data[start:]), writer.parsed, reader_schema)
    except Exception as exc:  # fastavro raises several types for truncated or corrupt bodies
        raise DecodeError(f"corrupt {writer.record_type} v{writer.version} body: {exc!r}") from exc


def _read_batch(data: bytes, start: int, writer: registry.SchemaVersion, record_type: str) -> SampleBatch:
    """A signal or dyno batch as columns: the numeric rows read by numpy when they are that layout."""
    if writer.record_type != record_type:
        raise DecodeError(f"expected a {record_type} record, got {writer.record_type} v{writer.version}")
    if writer.head is not None and registry.latest(record_type) is writer:
        try:
            buf = io.BytesIO(data)
            buf.seek(start)
            head = fastavro.schemaless_reader(buf, writer.head, None)
            columns = sample_arrays.decode_columns(data, buf.tell(), len(writer.sample_tail))
        except Exception as exc:  # fastavro raises several types for truncated or corrupt bodies
            raise DecodeError(f"corrupt {writer.record_type} v{writer.version} body: {exc!r}") from exc
        if columns is not None and isinstance(head, dict):
            timestamps, values, flags = columns
            return SampleBatch(record_type, head, timestamps, values, flags, np.ones(timestamps.size, np.bool_),
                               tail_fields=writer.sample_tail)
    return SampleBatch.from_record(record_type, _read_body(data, start, writer, record_type))


def _read_with_fast_samples(data: bytes, start: int, writer: registry.SchemaVersion) -> dict[str, Any] | None:
    """fastavro reads the fields before the samples, `sample_arrays` the samples; None if it declines them."""
    buf = io.BytesIO(data)
    buf.seek(start)
    head = fastavro.schemaless_reader(buf, writer.head, None)
    samples = sample_arrays.decode_samples(data, buf.tell(), writer.sample_tail)
    return None if samples is None or not isinstance(head, dict) else {**head, "samples": samples}


class Codec:
    """Encodes and decodes records; with `registry_url`, writes the Confluent wire format.

    The registry client is created lazily, so a codec costs nothing until a registry is actually used.
    `mock://` URLs give confluent-kafka's in-memory registry (tests).
    """

    def __init__(self, registry_url: str | None = None, registry_config: dict[str, Any] | None = None):
        self.registry_url = registry_url
        self._registry_config = registry_config or {}
        self._client: Any = None
        self._ids: dict[tuple[str, str], int] = {}
        self._by_id: dict[int, registry.SchemaVersion] = {}

    def _registry(self) -> Any:
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._client = SchemaRegistryClient.new_client({"url": self.registry_url, **self._registry_config})
        return self._client

    def _schema_id(self, subject: str, version: registry.SchemaVersion) -> int:
        key = (subject, version.full_name + str(version.version))
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            schema = Schema(fastavro.schema.to_parsing_canonical_form(version.parsed), "AVRO")
            schema_id = self._registry().register_schema(subject, schema)
            self._ids[key] = schema_id
            self._by_id[schema_id] = version
        return self._ids[key]

    def encode(self, record_type: str, record: dict[str, Any], topic: str = "") -> bytes:
        """Encode one record; `topic` names the registry subject (`<topic>-value`)."""
        latest = registry.latest(record_type)
        return self._frame(latest, topic or record_type) + _write_body(latest, record)

    def encode_many(self, record_type: str, records: Iterable[dict[str, Any]], topic: str = "") -> list[bytes]:
        return [self.encode(record_type, r, topic) for r in records]

    def encode_batch(self, batch: SampleBatch, topic: str = "") -> bytes:
        """Encode a sample batch from its columns (the bytes `encode` writes for its record form)."""
        latest = registry.latest(batch.record_type)
        return self._frame(latest, topic or batch.record_type) + _write_batch_body(latest, batch)

    def decode_batch(self, data: bytes, record_type: str) -> SampleBatch:
        """Decode a signal or dyno batch (either framing) straight into columns."""
        if record_type not in SAMPLE_BATCH_TYPES:
            raise ValueError(f"{record_type} records have no sample columns; decode them with `decode`")
        writer, start = self._writer(data)
        return _read_batch(data, start, writer, record_type)

    def encode_record(self, record_type: str, record: dict[str, Any] | SampleBatch, topic: str = "") -> bytes:
        """`encode` or `encode_batch`, whichever form the record is in."""
        if isinstance(record, SampleBatch):
            return self.encode_batch(record, topic)
        return self.encode(record_type, record, topic)

    def _frame(self, version: registry.SchemaVersion, subject_topic: str) -> bytes:
        """The framing prefix this codec writes: single-object, or Confluent's with the registry's schema id."""
        if not self.registry_url:
            return SINGLE_OBJECT_MARKER + version.fingerprint
        return struct.pack(">bI", _CONFLUENT_MAGIC, self._schema_id(f"{subject_topic}-value", version))

    def _writer(self, data: bytes) -> tuple[registry.SchemaVersion, int]:
        """The writer schema a message names, and where its body starts (either framing)."""
        if data[:1] == b"\x00" and len(data) >= 5:
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer = self._by_id.get(schema_id)
            return (writer if writer is not None else self._lookup(schema_id)), 5
        if len(data) < 10 or data[:2] != SINGLE_OBJECT_MARKER:
            raise DecodeError(f"not Avro single-object encoding (starts with {data[:2].hex() or 'nothing'})")
        found = registry.by_fingerprint(data[2:10])
        if found is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        return found, 10

    def decode(self, data: bytes, record_type: str | None = None) -> Any:
        """Decode either framing."""
        writer, start = self._writer(data)
        return _read_body(data, start, writer, record_type)

    def _lookup(self, schema_id: int) -> registry.SchemaVersion:
        if not self.registry_url:
            raise DecodeError(f"Confluent-framed record (schema id {schema_id}) but no schema registry configured")
        import json

        try:
            text = self._registry().get_schema(schema_id).schema_str
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} not found in the registry: {exc}") from exc
        canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(json.loads(text)))
        for versions in (registry.history(t) for t in registry.record_types()):
            for version in versions:
                if fastavro.schema.to_parsing_canonical_form(version.parsed) == canonical:
                    self._by_id[schema_id] = version
                    return version
        raise DecodeError(f"schema id {schema_id} is not one of fleetstream's schemas")
