"""Decoded records → column lists for one insert: which table a topic fills and one mapper per record type.

Pure functions over plain data (no client, no Kafka), so each mapping is unit-tested on its own. Batched
record types are flattened to one row per sample, point, code or location; record-level fields are repeated
with list multiplication and per-sample fields gathered with one comprehension per column, which keeps the
Python work per sample to a few list appends. Timestamps stay integer milliseconds: clickhouse-connect writes
ints into DateTime64(3) as-is, with no datetime objects in between.

The samples table, which takes nearly all rows, has a faster path: `samples_arrow` builds an Arrow table from
the records' `SampleBatch` columns (numpy arrays handed to Arrow, no Python object per sample), with the
per-record columns gathered by index in C (`take`); the sink inserts it with `insert_arrow` (see
`benchmarks/sink.py` for the figures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetstream.schemas.deadletter import dead_letter_envelope
from fleetstream.schemas.sample_batch import SAMPLE_BATCH_TYPES, SampleBatch
from fleetstream.topics import SAMPLES_FIELD, is_dead_letter_topic

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ROUTES",
    "Columns",
    "Route",
    "SourcedRecord",
    "dead_letter_columns_from_raw",
    "merge_columns",
    "route",
    "row_count",
    "rows_of",
    "samples_arrow",
    "to_columns",
]

Columns = dict[str, list[Any]]


@dataclass(frozen=True, slots=True)
class SourcedRecord:
    """A decoded record and where it was read from (kept in every row as provenance)."""

    value: dict[str, Any] | SampleBatch
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass(frozen=True)
class Route:
    """Where the records of one topic go."""

    table: str
    record_type: str


ROUTES: dict[str, Route] = {
    "telemetry.signals.valid": Route("samples", "signal_batch"),
    "dyno.samples.valid": Route("samples", "dyno_sample_batch"),
    "telemetry.dtcs.valid": Route("dtcs", "dtc_batch"),
    "telemetry.gps.valid": Route("gps_points", "gps_batch"),
    "telemetry.netstats.valid": Route("network_stats", "network_stats"),
    "fleet.locations.valid": Route("fleet_locations", "fleet_location_batch"),
    "fleet.faults.valid": Route("fleet_faults", "fleet_fault_batch"),
    "telemetry.windows": Route("window_aggregates", "window_aggregate"),
    "analytics.kpi": Route("kpis", "kpi"),
    "analytics.threshold.exceeded": Route("alerts", "alert"),
    "alert.acknowledged": Route("alert_acks", "alert_ack"),
    "audit.log": Route("audit_log", "audit_entry"),
    "analytics.events": Route("analytics_events", "analytics_event"),
    "analytics.metric.values": Route("metric_values", "metric_value"),
    "analytics.definitions": Route("analytics_definitions", "analytics_definition"),
}
"""Topics the sink stores; every `dlq.*` topic additionally goes to dead_letters."""

DEAD_LETTERS = Route("dead_letters", "dead_letter")


def route(topic: str) -> Route:
    """The table and record type of `topic`; KeyError for a topic the sink does not store."""
    if is_dead_letter_topic(topic):
        return DEAD_LETTERS
    try:
        return ROUTES[topic]
    except KeyError:
        raise KeyError(f"the ClickHouse sink does not store topic {topic!r}") from None


def _provenance(cols: Columns, rec: SourcedRecord, n: int) -> None:
    cols["kafka_topic"] += [rec.topic] * n
    cols["kafka_partition"] += [rec.partition] * n
    cols["kafka_offset"] += [rec.offset] * n


def _repeat(cols: Columns, value: dict[str, Any] | SampleBatch, fields: Sequence[str], n: int) -> None:
    for field in fields:
        cols[field] += [value[field]] * n


def _new(names: Sequence[str]) -> Columns:
    return {name: [] for name in (*names, "kafka_topic", "kafka_partition", "kafka_offset")}


_VEHICLE = ("org_id", "fleet_id", "vehicle_id", "device_id", "source", "batch_id")
_SAMPLE_COLUMNS = (*_VEHICLE, "channel", "unit", "ts", "value", "svalue", "flags", "run_id", "provider", "sensor_state")
_DESCRIPTOR = ("signal_type", "param_type", "param_id", "message_name", "network_name", "ecu_name", "ecu_id",
               "arb_id", "file_id", "message_date")
"""A signal's descriptor fields, stored on each of its samples (014_signal_descriptors.sql); empty for dyno."""


def _signal_batches(records: Sequence[SourcedRecord]) -> Columns:
    cols = _new((*_SAMPLE_COLUMNS, *_DESCRIPTOR))
    for rec in records:
        v, samples = rec.value, rec.value["samples"]
        n = len(samples)
        _repeat(cols, v, _VEHICLE, n)
        for field in _DESCRIPTOR:  # optional in hand-built records; decoded ones carry the schema defaults
            cols[field] += [v.get(field, "")] * n
        cols["channel"] += [v["name"]] * n
        cols["unit"] += [v["unit"]] * n
        cols["ts"] += [s["timestamp_ms"] for s in samples]
        cols["value"] += [s["value"] for s in samples]
        cols["svalue"] += [s["svalue"] or "" for s in samples]
        cols["flags"] += [s.get("flags", 0) for s in samples]
        cols["run_id"] += [""] * n
        cols["provider"] += [""] * n
        cols["sensor_state"] += [""] * n
        _provenance(cols, rec, n)
    return cols


def _dyno_batches(records: Sequence[SourcedRecord]) -> Columns:
    """Dyno samples share the samples table: the station is the vehicle, the source system the device."""
    cols = _new((*_SAMPLE_COLUMNS, *_DESCRIPTOR))
    for rec in records:
        v, samples = rec.value, rec.value["samples"]
        n = len(samples)
        for field in _DESCRIPTOR:
            cols[field] += [""] * n
        cols["org_id"] += [""] * n
        cols["fleet_id"] += [""] * n
        cols["vehicle_id"] += [v["station_id"]] * n
        cols["device_id"] += [v["provider"]] * n
        _repeat(cols, v, ("source", "batch_id", "channel", "unit", "run_id", "provider", "sensor_state"), n)
        cols["ts"] += [s["timestamp_ms"] for s in samples]
        cols["value"] += [s["value"] for s in samples]
        cols["svalue"] += [""] * n
        cols["flags"] += [s.get("flags", 0) for s in samples]
        _provenance(cols, rec, n)
    return cols


def _dtc_batches(records: Sequence[SourcedRecord]) -> Columns:
    header = ("message_name", "network_name", "ecu_name", "ecu_id")
    optional = ("name", "arb_id", "file_id", "message_date")
    cols = _new((*_VEHICLE, *header, *optional, "ts", "dtc_id", "status", "description", "extended", "snapshot"))
    for rec in records:
        v, dtcs = rec.value, rec.value["dtcs"]
        n = len(dtcs)
        _repeat(cols, v, (*_VEHICLE, *header), n)
        for field in optional:
            cols[field] += [v.get(field, "")] * n
        cols["ts"] += [d["timestamp_ms"] for d in dtcs]
        for field in ("dtc_id", "status", "description", "extended", "snapshot"):
            cols[field] += [d[field] for d in dtcs]
        _provenance(cols, rec, n)
    return cols


_GPS_AVAILABLE_BITS = (("accuracy", 1), ("altitude", 2), ("bearing", 4), ("speed", 8), ("time", 16))


def _available_mask(available: dict[str, bool] | None) -> int:
    if not available:
        return 0
    return sum(bit for name, bit in _GPS_AVAILABLE_BITS if available.get(name))


def _gps_batches(records: Sequence[SourcedRecord]) -> Columns:
    point_fields = ("latitude", "longitude", "accuracy_m", "altitude_m", "speed", "bearing_deg")
    cols = _new((*_VEHICLE, "ts", *point_fields, "available_mask"))
    for rec in records:
        v, points = rec.value, rec.value["points"]
        n = len(points)
        _repeat(cols, v, _VEHICLE, n)
        cols["ts"] += [p["timestamp_ms"] for p in points]
        for field in point_fields:
            cols[field] += [p[field] for p in points]
        cols["available_mask"] += [_available_mask(p["available"]) for p in points]
        _provenance(cols, rec, n)
    return cols


def _network_stats(records: Sequence[SourcedRecord]) -> Columns:
    counts = ("upload_id", "file_id", "total_messages", "matched_messages", "unmatched_messages", "error_messages",
              "long_message_parts", "rate")
    cols = _new((*_VEHICLE, "ts", "network", *counts, "min_time", "max_time"))
    for rec in records:
        v = rec.value
        _repeat(cols, v, (*_VEHICLE, *counts), 1)
        cols["ts"].append(v["timestamp_ms"])
        cols["network"].append(v["name"])
        cols["min_time"].append(v["min_time_ms"])
        cols["max_time"].append(v["max_time_ms"])
        _provenance(cols, rec, 1)
    return cols


_FLEET_VEHICLE = ("provider", "provider_vehicle_id", "vin", "fleet_number", "batch_id")


def _fleet_locations(records: Sequence[SourcedRecord]) -> Columns:
    fields = ("latitude", "longitude", "speed_mph", "heading_degrees", "engine_state", "driver_id", "driver_name",
              "location_description", "odometer_miles")
    cols = _new((*_FLEET_VEHICLE, "ts", *fields))
    for rec in records:
        v, locations = rec.value, rec.value["locations"]
        n = len(locations)
        _repeat(cols, v, _FLEET_VEHICLE, n)
        cols["ts"] += [loc["timestamp_ms"] for loc in locations]
        for field in fields:
            cols[field] += [loc[field] for loc in locations]
        _provenance(cols, rec, n)
    return cols


def _fleet_faults(records: Sequence[SourcedRecord]) -> Columns:
    fields = ("fault_id", "code", "description", "status", "source_address")
    cols = _new((*_FLEET_VEHICLE, *fields, "first_observed", "last_observed"))
    for rec in records:
        v, faults = rec.value, rec.value["faults"]
        n = len(faults)
        _repeat(cols, v, _FLEET_VEHICLE, n)
        for field in fields:
            cols[field] += [f[field] for f in faults]
        cols["first_observed"] += [f["first_observed_ms"] for f in faults]
        cols["last_observed"] += [f["last_observed_ms"] for f in faults]
        _provenance(cols, rec, n)
    return cols


def _flat(fields: Sequence[str], renamed: dict[str, str]) -> Callable[[Sequence[SourcedRecord]], Columns]:
    """A mapper for one-row-per-record types: `fields` copied as they are, `renamed` as column ← field."""

    def mapper(records: Sequence[SourcedRecord]) -> Columns:
        cols = _new((*fields, *renamed))
        for rec in records:
            for field in fields:
                cols[field].append(rec.value[field])
            for column, field in renamed.items():
                cols[column].append(rec.value[field])
            _provenance(cols, rec, 1)
        return cols

    return mapper


_window_aggregates = _flat(
    ("key", "source_topic", "channel", "unit", "window_kind", "count", "min", "max", "mean", "last", "p95"),
    {"window_start": "window_start_ms", "window_end": "window_end_ms"},
)
_kpis = _flat(
    ("scope", "scope_id", "name", "value", "unit", "dimensions"),
    {"period_start": "period_start_ms", "period_end": "period_end_ms", "computed_at": "computed_at_ms"},
)
_alerts = _flat(
    ("alert_id", "event", "kind", "rule_id", "key", "channel", "severity", "comparator", "threshold", "value",
     "message"),
    {"started": "started_ms", "ended": "ended_ms"},
)
_alert_acks = _flat(("org_id", "key", "alert_id", "user_id", "note"), {"acked_at": "acked_ms"})
_audit_entries = _flat(
    ("org_id", "request_id", "user_id", "role", "auth", "method", "path", "query", "status", "duration_ms", "client"),
    {"ts": "ts_ms"},
)

_analytics_events = _flat(
    ("org_id", "event_type", "event_name", "event_id", "user_id", "session_id", "vehicle_id", "source",
     "tracked_by"),
    {"ts": "timestamp_ms", "properties": "properties_json", "context": "context_json", "received_at": "received_ms"},
)
_metric_values = _flat(
    ("org_id", "metric", "value_id", "metric_type", "value", "unit", "dimensions", "recorded_by"),
    {"ts": "timestamp_ms"},
)
_analytics_definitions = _flat(
    ("org_id", "kind", "name", "deleted", "updated_by"), {"body": "body_json", "updated_at": "updated_ms"},
)

_DEAD_LETTER_FIELDS = ("source_topic", "stage", "error_code", "reason", "sample_count", "attempt", "original")


def _dead_letters(records: Sequence[SourcedRecord]) -> Columns:
    cols = _new((*_DEAD_LETTER_FIELDS, "source_partition", "source_offset", "key", "first_seen"))
    for rec in records:
        v = rec.value
        for field in _DEAD_LETTER_FIELDS:
            cols[field].append(v[field])
        cols["source_partition"].append(v["partition"])
        cols["source_offset"].append(v["offset"])
        cols["key"].append(v["key"] or b"")
        cols["first_seen"].append(v["first_seen_ms"])
        _provenance(cols, rec, 1)
    return cols


def dead_letter_columns_from_raw(
    raw: Sequence[tuple[SourcedRecord, str]], now_ms: int
) -> Columns:
    """Dead-letter rows for messages of a `dlq.*` topic that are not readable dead letters themselves.

    `raw` pairs a record whose `value` is `{"original": bytes}` with the decode error. They are stored
    directly (stage sink, error malformed) rather than sent to yet another dead-letter topic.
    """
    records = [
        SourcedRecord(
            value=dead_letter_envelope(source_topic=rec.topic, partition=rec.partition, offset=rec.offset,
                                       key=rec.key, original=rec.value["original"], stage="sink",
                                       error_code="malformed", reason=error, sample_count=1, now_ms=now_ms),
            topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
        )
        for rec, error in raw
    ]
    return _dead_letters(records)


_MAPPERS: dict[str, Callable[[Sequence[SourcedRecord]], Columns]] = {
    "signal_batch": _signal_batches,
    "dyno_sample_batch": _dyno_batches,
    "dtc_batch": _dtc_batches,
    "gps_batch": _gps_batches,
    "network_stats": _network_stats,
    "fleet_location_batch": _fleet_locations,
    "fleet_fault_batch": _fleet_faults,
    "window_aggregate": _window_aggregates,
    "kpi": _kpis,
    "alert": _alerts,
    "alert_ack": _alert_acks,
    "audit_entry": _audit_entries,
    "analytics_event": _analytics_events,
    "metric_value": _metric_values,
    "analytics_definition": _analytics_definitions,
    "dead_letter": _dead_letters,
}


def to_columns(record_type: str, records: Sequence[SourcedRecord]) -> Columns:
    """The rows `records` (all of `record_type`) become, column by column, ready for a column-oriented insert."""
    try:
        mapper = _MAPPERS[record_type]
    except KeyError:
        raise KeyError(f"no row mapping for record type {record_type!r}") from None
    return mapper([replace(r, value=r.value.to_record()) if isinstance(r.value, SampleBatch) else r for r in records])


def row_count(columns: Columns) -> int:
    """Rows in a column dict (all columns have the same length)."""
    return len(next(iter(columns.values()), []))


def merge_columns(parts: Sequence[Columns]) -> Columns:
    """Concatenate column dicts of the same table (e.g. decoded dead letters and raw ones of one batch)."""
    parts = [p for p in parts if row_count(p)]
    if not parts:
        return {}
    out: Columns = {name: [] for name in parts[0]}
    for part in parts:
        for name, values in part.items():
            out[name] += values
    return out


def rows_of(record_type: str, value: dict[str, Any] | SampleBatch) -> int:
    """How many rows one decoded record becomes (the length of its batch array, else one)."""
    if isinstance(value, SampleBatch):
        return len(value)
    field = SAMPLES_FIELD.get(record_type)
    return 1 if field is None else len(value[field])


def samples_arrow(record_type: str, records: Sequence[SourcedRecord]) -> pa.Table:
    """The same rows as `to_columns` for `signal_batch`/`dyno_sample_batch`, as an Arrow table for `samples`.

    Column order and types follow 001_samples.sql (`ingested_at` is left to its default). The sink decodes
    these records straight into `SampleBatch` columns: the per-sample columns are the batches' numpy arrays,
    concatenated once and handed to Arrow without a Python object per sample; record-level values are built
    once per record and repeated with one `take` per column. Decoded dicts (tests, tools) are read into
    batches first.
    """
    import pyarrow as pa

    if record_type not in SAMPLE_BATCH_TYPES:
        raise KeyError(f"record type {record_type!r} does not go to the samples table")
    batches = [r.value if isinstance(r.value, SampleBatch) else SampleBatch.from_record(record_type, r.value)
               for r in records]
    counts = np.fromiter((len(b) for b in batches), np.int64, len(batches))
    n = int(counts.sum())
    index = pa.array(np.repeat(np.arange(len(batches), dtype=np.int64), counts))  # row -> its record

    def per_record(items: list[Any], type_: pa.DataType | None = None) -> pa.Array:
        if type_ is None:  # strings: dictionary-encoded (ClickHouse wants unique entries), no string copy per row
            encoded = pa.array(items, pa.string()).dictionary_encode()
            return pa.DictionaryArray.from_arrays(encoded.indices.take(index), encoded.dictionary)
        return pa.array(items, type_).take(index)

    def constant(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), n), pa.array([value]))

    def column(name: str, dtype: type) -> Any:
        return np.concatenate([getattr(b, name) for b in batches]) if batches else np.empty(0, dtype)

    if record_type == "signal_batch":
        vehicle = {f: per_record([b[f] for b in batches]) for f in _VEHICLE}
        channel, unit = per_record([b["name"] for b in batches]), per_record([b["unit"] for b in batches])
        svalue = _svalues(batches, n) if any(b.svalue is not None for b in batches) else constant("")
        run_id = provider = sensor_state = constant("")
        descriptor = {f: per_record([b.get(f, "") for b in batches]) for f in _DESCRIPTOR}
    else:
        vehicle = {"org_id": constant(""), "fleet_id": constant(""),
                   "vehicle_id": per_record([b["station_id"] for b in batches]),
                   "device_id": per_record([b["provider"] for b in batches]),
                   "source": per_record([b["source"] for b in batches]),
                   "batch_id": per_record([b["batch_id"] for b in batches])}
        channel, unit = per_record([b["channel"] for b in batches]), per_record([b["unit"] for b in batches])
        svalue = constant("")
        run_id = per_record([b["run_id"] for b in batches])
        provider = per_record([b["provider"] for b in batches])
        sensor_state = per_record([b["sensor_state"] for b in batches])
        descriptor = {f: constant("") for f in _DESCRIPTOR}
    has_value = column("has_value", np.bool_)
    return pa.table({
        "org_id": vehicle["org_id"], "fleet_id": vehicle["fleet_id"], "vehicle_id": vehicle["vehicle_id"],
        "device_id": vehicle["device_id"], "source": vehicle["source"], "channel": channel, "unit": unit,
        "ts": pa.array(column("timestamp_ms", np.int64)).cast(pa.timestamp("ms", "UTC")),
        "value": pa.array(column("value", np.float64), mask=None if has_value.all() else ~has_value),
        "svalue": svalue,
        "flags": pa.array(column("flags", np.int64).astype(np.uint8)),
        "run_id": run_id, "provider": provider, "sensor_state": sensor_state, "batch_id": vehicle["batch_id"],
        "kafka_topic": per_record([r.topic for r in records]),
        "kafka_partition": per_record([r.partition for r in records], pa.uint16()),
        "kafka_offset": per_record([r.offset for r in records], pa.uint64()),
        **descriptor,
    })


def _svalues(batches: Sequence[SampleBatch], n: int) -> pa.Array:
    """The string values of every sample, "" for none (the table's column is not nullable)."""
    import pyarrow as pa

    values: list[str | None] = []
    for b in batches:
        values += b.svalue if b.svalue is not None else [None] * len(b)
    return pa.array(values, pa.string()).fill_null("")
