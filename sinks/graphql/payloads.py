"""The GraphQL requests for decoded records, exactly as the public vehicle client shapes them.

Pure functions over plain data: no I/O, no caches. `fleetstream.sinks.graphql.forwarder` decides which requests to
send (ids already cached or not) and in which order; this module says what each request contains.

Facts taken from the public client `ics-wivi-analytics-ingest` 26.3.x, which the backend is built for:
- Documents: its six mutations and its `__type(name: "CreateNetworkStatsInput")` probe, sent as
  graphql-core prints them (`print_ast(parse(...))`), body `{"query": ..., "variables": ...}`.
- Id types differ per mutation: upsertSignalData and createNetworkStats carry ids as numbers,
  upsertDtcData the configuration id as the returned string and the message id as a number,
  upsertGpsData the configuration id as the returned string. The contract's `ID` accepts both.
- createMessage keys: arbId, name (message name, else signal name), networkName, ecuName, ecuId,
  requestCode, fileId, messageDate; the cache key and the match of returned messages use
  (arbId, networkName, ecuName, name), each stripped.
- paramType: vehicle labels RawValue -> RAW, State Encoded -> ENCODED, NUMBER -> RAW, string -> STRING,
  any other label -> TEXT, empty -> omitted (null).
- Network stats: `exclude_none` of name, configurationId | vehicleId, fileId, uploadId, the counts,
  maxTime, minTime, rate.
- Keys its input leaves out or gives as None: createMessage sends null (`var.get(key)`); upsertSignalData
  sends paramId "" when left out and null when None (`variables.get("paramId", "")`), upsertDtcData the same
  for fileId and messageDate; a DTC's extended/snapshot and a GPS fix's availability flags are null; network
  stats omit fileId.
- Times: a signal point's `time` text as given (a number: `datetime.fromtimestamp(t, UTC).isoformat()`); a
  DTC's and a GPS fix's time as pydantic parses and `isoformat()` prints it; minTime/maxTime as given.

Records from the vehicle client (`fleetstream.producers.vehicle_client`) say which keys were left out or None
(`absent_fields`, `null_fields`) and carry the client's time text where it differs from ISO-8601 UTC "Z"
(`time_text`, `min_time_text`, `max_time_text`), so their requests are the client's, null for null. Other
records carry only epoch milliseconds and stored strings: times are sent as ISO-8601 UTC with "Z" (see
`iso_time`) and strings as stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from graphql import parse, print_ast

from fleetstream.sinks.graphql.exceptions import InvalidRecord

__all__ = [
    "CREATE_CONFIGURATION",
    "CREATE_MESSAGE",
    "CREATE_NETWORK_STATS",
    "DETECT_NETWORK_STATS_ID_FIELD",
    "UPSERT_DTC_DATA",
    "UPSERT_GPS_DATA",
    "UPSERT_SIGNAL_DATA",
    "ConfigKey",
    "GraphQLRequest",
    "MessageDescriptor",
    "Part",
    "chunked",
    "configuration_key",
    "configuration_request",
    "detect_request",
    "dtc_parts",
    "dtc_request",
    "gps_points",
    "gps_requests",
    "iso_time",
    "match_message_ids",
    "message_descriptor",
    "message_request",
    "network_id_field",
    "network_stats_request",
    "normalise_param_type",
    "normalise_signal_type",
    "pack",
    "signal_parts",
    "signal_request",
]


def _canonical(document: str) -> str:
    return print_ast(parse(document))


CREATE_CONFIGURATION = _canonical("""
mutation createConfiguration($input: CreateConfigurationInput!) {
  createConfiguration(input: $input) { id deviceId vehicleId organizationId fleetId }
}""")
CREATE_MESSAGE = _canonical("""
mutation createMessage($input: CreateMessageInput!) {
  createMessage(input: $input) { id arbId name networkName ecuId ecuName fileId }
}""")
UPSERT_SIGNAL_DATA = _canonical("""
mutation UpsertSignalData($input: UpsertSignalDataInput!) {
  upsertSignalData(input: $input) { configurationId messageId messageName name paramType unit }
}""")
UPSERT_DTC_DATA = _canonical("""
mutation UpsertDtcData($input: [UpsertDtcDataInput]!) {
  upsertDtcData(input: $input) { configurationId messageId }
}""")
UPSERT_GPS_DATA = _canonical("""
mutation UpsertGpsData($input: UpsertGpsDataInput!) {
  upsertGpsData(input: $input) { deviceId fleetId vehicleId id organizationId }
}""")
CREATE_NETWORK_STATS = _canonical("""
mutation createNetworkStats($input: CreateNetworkStatsInput!) {
  createNetworkStats(input: $input) {
    name uploadId totalMessages matchedMessages unmatchedMessages errorMessages longMessageParts minTime maxTime rate
  }
}""")
DETECT_NETWORK_STATS_ID_FIELD = _canonical("""
query DetectCreateNetworkStatsInputType {
  __type(name: "CreateNetworkStatsInput") { inputFields { name } }
}""")

T = TypeVar("T")

_INT32 = (-(2**31), 2**31 - 1)
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class GraphQLRequest:
    """One POST to the backend: the document, its variables, and the root field it calls (for logs)."""

    field: str
    document: str
    variables: dict[str, Any] | None

    def body(self) -> dict[str, Any]:
        return {"query": self.document, "variables": self.variables}


@dataclass(frozen=True)
class Part:
    """One input object of a batched request, with the record it came from and how many samples it carries."""

    record: int
    payload: dict[str, Any]
    samples: int


class ConfigKey(NamedTuple):
    """What createConfiguration is keyed on; the backend's Int ids."""

    device_id: int
    vehicle_id: int
    fleet_id: int
    org_id: int


def _int_id(record: dict[str, Any], field: str) -> int:
    raw = record.get(field)
    text = str(raw).strip() if raw is not None else ""
    if not _INTEGER.fullmatch(text):
        raise InvalidRecord("invalid_id", f"{field} {raw!r} is not an integer; the backend's ids are Int")
    value = int(text)
    if not _INT32[0] <= value <= _INT32[1]:
        raise InvalidRecord("invalid_id", f"{field} {raw!r} does not fit the backend's 32-bit Int")
    return value


def _int32(value: int | None, field: str) -> int | None:
    if value is not None and not _INT32[0] <= value <= _INT32[1]:
        raise InvalidRecord("out_of_range", f"{field} {value} does not fit the backend's 32-bit Int")
    return value


def _finite(value: float | None, field: str) -> float | None:
    # JSON has no NaN or infinity; the validator should have caught them, but a sink must not send them.
    if value is not None and not math.isfinite(value):
        raise InvalidRecord("nan", f"{field} is {value}, which JSON and GraphQL Float cannot carry")
    return value


def configuration_key(record: dict[str, Any]) -> ConfigKey:
    """The record's (device, vehicle, fleet, organization) as Ints; a non-integer id is an `InvalidRecord`."""
    return ConfigKey(_int_id(record, "device_id"), _int_id(record, "vehicle_id"), _int_id(record, "fleet_id"),
                     _int_id(record, "org_id"))


def configuration_request(key: ConfigKey) -> GraphQLRequest:
    """createConfiguration with the client's key order."""
    return GraphQLRequest("createConfiguration", CREATE_CONFIGURATION, {"input": {
        "deviceId": key.device_id, "fleetId": key.fleet_id, "organizationId": key.org_id,
        "vehicleId": key.vehicle_id}})


def iso_time(timestamp_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with "Z": `1970-01-07T18:28:54Z`, `2025-08-01T11:06:53.947Z`.

    Whole seconds print as the client prints epoch times (`%Y-%m-%dT%H:%M:%SZ`); other instants keep
    their milliseconds, as the client's ISO inputs do, so no two samples of a batch collapse onto one
    second. Both forms round-trip the times in the client's README exactly.
    """
    seconds, millis = divmod(timestamp_ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}Z" if millis == 0 else f"{moment}.{millis:03d}Z"


_VEHICLE_PARAM_TYPES = {"RawValue": "RAW", "State Encoded": "ENCODED", "NUMBER": "RAW", "string": "STRING"}
_CANONICAL_PARAM_TYPES = frozenset({"ENCODED", "RAW", "TEXT", "STRING"})


def normalise_param_type(label: str | None) -> str | None:
    """The client's paramType rule, made idempotent: labels already normalised upstream stay as they are.

    The client maps RawValue/State Encoded/NUMBER/string and turns every other label into TEXT; our
    records usually carry the normalised label already (the Avro default is RAW), which that rule would
    wrongly turn into TEXT, so ENCODED, RAW, TEXT and STRING pass through.
    """
    if not label:
        return None
    if label in _CANONICAL_PARAM_TYPES:
        return label
    return _VEHICLE_PARAM_TYPES.get(label, "TEXT")


_SIGNAL_TYPES = frozenset({"SIGNAL", "DID", "PID", "DMR"})


def normalise_signal_type(label: str | None) -> str | None:
    """SIGNAL, DID, PID or DMR, case-insensitive as in the client; empty is omitted; anything else is invalid."""
    if not label:
        return None
    if label.upper() not in _SIGNAL_TYPES:
        raise InvalidRecord("invalid_record", f"signal_type {label!r} is not one of SIGNAL, DID, PID, DMR")
    return label.upper()


def _unset(record: dict[str, Any]) -> frozenset[str]:
    """Input keys the vehicle client's device left out or gave as None (none for other producers' records)."""
    return frozenset((*(record.get("absent_fields") or ()), *(record.get("null_fields") or ())))


def _or_null(value: Any, key: str, unset: frozenset[str]) -> Any:
    """`value`, or None where the device gave nothing for `key` (the record then holds an empty value)."""
    return None if key in unset and not value else value


@dataclass(frozen=True)
class MessageDescriptor:
    """A message the backend keeps an id for: what createMessage receives for a signal or DTC batch."""

    name: str
    network_name: str | None
    ecu_name: str | None
    ecu_id: str | None
    arb_id: str | None
    file_id: str | None
    message_date: str | None
    request_code: str | None = None

    @property
    def cache_key(self) -> tuple[str, str, str, str]:
        """(arbId, networkName, ecuName, name), stripped, null as "": the client's cache and match key."""
        return ((self.arb_id or "").strip(), (self.network_name or "").strip(), (self.ecu_name or "").strip(),
                self.name.strip())

    def message_input(self) -> dict[str, Any]:
        """The MessageInput object, keys in the client's order."""
        return {"arbId": self.arb_id, "name": self.name, "networkName": self.network_name,
                "ecuName": self.ecu_name, "ecuId": self.ecu_id, "requestCode": self.request_code,
                "fileId": self.file_id, "messageDate": self.message_date}


def message_descriptor(record: dict[str, Any]) -> MessageDescriptor:
    """The message a signal or DTC batch belongs to; its name is the message name, else the record's name.

    A key the device left out or gave as None is null, as the client sends it.
    """
    name = record.get("message_name") or record.get("name") or ""
    if not name.strip():
        raise InvalidRecord("missing_field", "neither message_name nor name is set; createMessage needs a name")
    unset = _unset(record)

    def field(record_field: str, key: str) -> str | None:
        return _or_null(record.get(record_field, ""), key, unset)

    return MessageDescriptor(name, field("network_name", "networkName"), field("ecu_name", "ecuName"),
                             field("ecu_id", "ecuId"), field("arb_id", "arbId"), field("file_id", "fileId"),
                             field("message_date", "messageDate"), record.get("request_code"))


def message_request(descriptors: Sequence[MessageDescriptor]) -> GraphQLRequest:
    """createMessage for `descriptors`, all in one request."""
    return GraphQLRequest("createMessage", CREATE_MESSAGE,
                          {"input": {"messages": [d.message_input() for d in descriptors]}})


def match_message_ids(descriptors: Iterable[MessageDescriptor], data: dict[str, Any]) -> dict[tuple[str, ...], str]:
    """Message ids from a createMessage response, matched back to descriptors on the client's key fields."""
    returned = {
        tuple((m.get(k) or "").strip() for k in ("arbId", "networkName", "ecuName", "name")): str(m["id"])
        for m in data.get("createMessage") or [] if m and m.get("id") is not None
    }
    return {d.cache_key: returned[d.cache_key] for d in descriptors if d.cache_key in returned}


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def signal_parts(index: int, record: dict[str, Any], configuration_id: str, message_id: str,
                 max_samples: int) -> list[Part]:
    """SignalInput objects for one signal batch, split so that none carries more than `max_samples` points."""
    param_id = record.get("param_id", "")
    head = {"configurationId": int(configuration_id), "messageId": int(message_id), "name": record["name"],
            "unit": record["unit"], "paramType": normalise_param_type(record.get("param_type")),
            "paramId": None if "paramId" in (record.get("null_fields") or ()) and not param_id else param_id,
            "signalType": normalise_signal_type(record.get("signal_type"))}
    data = [{"value": _finite(s.get("value"), "value"), "svalue": s.get("svalue"), "time": _time_of(s)}
            for s in record["samples"]]
    return [Part(index, {**head, "data": list(chunk)}, len(chunk)) for chunk in chunked(data, max_samples)]


def _time_of(item: dict[str, Any]) -> str:
    """The client's time text when the record kept it, else ISO-8601 UTC "Z" of the event time."""
    text = item.get("time_text")
    return text if text is not None else iso_time(item["timestamp_ms"])


def signal_request(parts: Sequence[Part]) -> GraphQLRequest:
    return GraphQLRequest("upsertSignalData", UPSERT_SIGNAL_DATA,
                          {"input": {"signals": [p.payload for p in parts]}})


def _bytes_list(dtc: dict[str, Any], key: str) -> list[dict[str, str]] | None:
    """BytesInput objects; null when the device gave none (an empty list given as [] stays [])."""
    items = dtc.get(key) or []
    unset = dtc.get("null_fields")
    if not items and (unset is None or key in unset):
        return None
    return [{"bytes": b} for b in items]


def dtc_parts(index: int, record: dict[str, Any], configuration_id: str, message_id: str,
              max_samples: int) -> list[Part]:
    """UpsertDtcDataInput objects for one DTC batch, split by `max_samples` codes.

    fileId and messageDate are "" when the device left them out and null when it gave None, as the client's
    `dtc.get(key, "")` sends them.
    """
    nulls = frozenset(record.get("null_fields") or ())
    data = [{"dtcId": d["dtc_id"], "status": d["status"], "description": d["description"],
             "time": _time_of(d), "extended": _bytes_list(d, "extended"), "snapshot": _bytes_list(d, "snapshot")}
            for d in record["dtcs"]]
    return [Part(index, {"fileId": _or_null(record.get("file_id", ""), "fileId", nulls),
                         "configurationId": configuration_id, "messageId": int(message_id),
                         "messageDate": _or_null(record.get("message_date", ""), "messageDate", nulls),
                         "data": list(chunk)}, len(chunk))
            for chunk in chunked(data, max_samples)]


def dtc_request(parts: Sequence[Part]) -> GraphQLRequest:
    return GraphQLRequest("upsertDtcData", UPSERT_DTC_DATA, {"input": [p.payload for p in parts]})


def gps_points(index: int, record: dict[str, Any]) -> list[Part]:
    """GpsPointInput objects of one GPS batch, one part per point (they are packed per configuration)."""
    return [Part(index, {"time": _time_of(p), "latitude": _finite(p.get("latitude"), "latitude"),
                         "longitude": _finite(p.get("longitude"), "longitude"),
                         "accuracy": _finite(p.get("accuracy_m"), "accuracy_m"),
                         "altitude": _finite(p.get("altitude_m"), "altitude_m"),
                         "speed": _finite(p.get("speed"), "speed"),
                         "bearing": _finite(p.get("bearing_deg"), "bearing_deg"),
                         "available": _available(p)}, 1)
            for p in record["points"]]


def _available(point: dict[str, Any]) -> dict[str, bool | None] | None:
    """GpsAvailableInput: the flags, null for those the device left out (`available.<flag>` in null_fields)."""
    flags = point.get("available")
    if not flags:
        return None
    unset = frozenset(point.get("null_fields") or ())
    return {key: None if f"available.{key}" in unset and not value else value for key, value in flags.items()}


def gps_requests(configuration_id: str, points: Sequence[Part], per_request: int) -> list[tuple[GraphQLRequest,
                                                                                                  Sequence[Part]]]:
    """upsertGpsData for one configuration's points, `per_request` points at a time."""
    return [(GraphQLRequest("upsertGpsData", UPSERT_GPS_DATA,
                            {"input": {"configurationId": configuration_id, "data": [p.payload for p in chunk]}}),
             chunk)
            for chunk in chunked(points, per_request)]


def detect_request() -> GraphQLRequest:
    """The introspection probe the client uses to learn how the backend keys network stats."""
    return GraphQLRequest("__type", DETECT_NETWORK_STATS_ID_FIELD, None)


def network_id_field(data: dict[str, Any]) -> str:
    """configurationId (current backends) or vehicleId (older ones), from the probe's answer."""
    fields = {f.get("name") for f in ((data.get("__type") or {}).get("inputFields") or [])}
    if "configurationId" not in fields and "vehicleId" in fields:
        return "vehicleId"
    return "configurationId"


def network_stats_request(record: dict[str, Any], configuration_id: str, vehicle_id: int,
                          id_field: str) -> GraphQLRequest:
    """createNetworkStats keyed by `id_field`, with the client's field order and its omission of nulls.

    Keyed by vehicleId (older backends), the client sends its input's vehicleId; records without one use
    `vehicle_id`, the record's vehicle.
    """
    ids: dict[str, int | None]
    if id_field == "configurationId":
        ids = {"configurationId": int(configuration_id)}
    else:
        given = record.get("input_vehicle_id")
        ids = {"vehicleId": _int32(given if given is not None else vehicle_id, "vehicleId")}
    # fileId: omitted when not given; the default null_fields (["fileId"]) reads an empty one so.
    unset = _unset({"null_fields": ["fileId"], **record})
    values: dict[str, Any] = {
        "name": record["name"], **ids, "fileId": _or_null(record.get("file_id", ""), "fileId", unset),
        "uploadId": _int32(record.get("upload_id"), "upload_id"),
        "totalMessages": _int32(record["total_messages"], "total_messages"),
        "matchedMessages": _int32(record["matched_messages"], "matched_messages"),
        "unmatchedMessages": _int32(record["unmatched_messages"], "unmatched_messages"),
        "errorMessages": _int32(record["error_messages"], "error_messages"),
        "longMessageParts": _int32(record["long_message_parts"], "long_message_parts"),
        "maxTime": _stats_time(record, "max_time"),
        "minTime": _stats_time(record, "min_time"),
        "rate": _finite(record["rate"], "rate"),
    }
    return GraphQLRequest("createNetworkStats", CREATE_NETWORK_STATS,
                          {"input": {k: v for k, v in values.items() if v is not None}})


def _stats_time(record: dict[str, Any], field: str) -> str | None:
    """minTime/maxTime: the text the device gave, else ISO-8601 UTC "Z" of the stored time, else omitted."""
    text = record.get(f"{field}_text")
    if text is not None:
        return str(text)
    return iso_time(record[f"{field}_ms"]) if record.get(f"{field}_ms") is not None else None


def pack(parts: Sequence[Part], max_items: int, max_samples: int) -> list[list[Part]]:
    """Greedy, order-keeping packing: a request closes at `max_items` parts or `max_samples` samples.

    A part never exceeds `max_samples` (the part builders split), so every request holds at least one.
    """
    requests: list[list[Part]] = []
    current: list[Part] = []
    samples = 0
    for part in parts:
        if current and (len(current) >= max_items or samples + part.samples > max_samples):
            requests.append(current)
            current, samples = [], 0
        current.append(part)
        samples += part.samples
    if current:
        requests.append(current)
    return requests
