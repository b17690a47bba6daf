"""A drop-in for the public `IcsAnalytics` device client that publishes to Kafka through a durable spool.

Same constructor arguments, same methods and the same input dicts as `ics-wivi-analytics-ingest` 26.3.x (the
backend's device client): existing device code changes one import. The difference is durability: every
`add_*` writes the record to the local spool (fsync'd) before it returns, so a process killed right after
still delivers it; a background thread publishes the spool to Kafka, batched by count (`batch_size` samples or
`max_signal_count` records) and by time (`batch_interval_seconds`). The GraphQL backend is then fed by the
fleetstream GraphQL forwarder, which sends what the official client would have sent for the same input:

- a key the input leaves out or gives as None stays null where the official client sends null (`ecuId`,
  `arbId`, ... in createMessage) and "" where it defaults to "" (`paramId`; a DTC's `fileId`, `messageDate`);
- times are sent as that client sends them: a signal's `time` text as given, a DTC's or GPS fix's time as
  pydantic re-prints it (`...56.789Z` becomes `...56.789000+00:00`), `minTime`/`maxTime` as given.

Times. ISO-8601 text without a zone is UTC. A number in `time` is epoch seconds, as the official client reads
it (`datetime.fromtimestamp`); a number past 2e10 (the year 2603 as seconds) is refused, since it is almost
certainly epoch milliseconds, which that client cannot send either. Epoch milliseconds go in a signal point's
`timestamp` key. A GPS fix's numeric `time` follows the official client's pydantic rule: up to 2e10 seconds,
beyond that milliseconds.

Validation is stricter than the official client's where that client would send wrong data or fail later: a
wrong type is a `ValueError` naming the argument (`batch_size="100"`, `time=1e30`, `data: ["P0300"]`), a
signal point with neither `value` nor `svalue` is refused (the official client drops it silently).

Where it publishes: `kafka=`, `bootstrap_servers=` or `settings=`, else the fleetstream configuration
(`KAFKA_BOOTSTRAP_SERVERS`, `FLEETSTREAM_KAFKA__*`, `FLEETSTREAM_CONFIG`); the spool lives under
`FLEETSTREAM_HOME` (`<home>/vehicle-client/<device>-<vehicle>`) unless `spool_dir=` says otherwise.

    from fleetstream.producers.vehicle_client import IcsAnalytics      # was: from analytics_ingest import IcsAnalytics
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fleetstream.config import KafkaSettings, Settings, load_settings
from fleetstream.producers.edge import EdgeProducer
from fleetstream.producers.spool import Spool, SpoolEntry
from fleetstream.schemas.codec import serializer
from fleetstream.topics import sample_count

__all__ = ["AsyncIcsAnalytics", "IcsAnalytics", "normalize_param_type", "parse_time_ms"]

log = logging.getLogger(__name__)

_SIGNAL_TYPES = {"SIGNAL", "DID", "PID", "DMR"}
_PARAM_TYPES = {"RawValue": "RAW", "State Encoded": "ENCODED", "NUMBER": "RAW", "string": "STRING"}
_MESSAGE_KEYS = ("networkName", "ecuName", "ecuId", "arbId", "fileId", "messageDate")
"""Input keys of a signal or DTC that name its message (createMessage), besides its name and requestCode."""
_AVAILABLE = ("accuracy", "altitude", "bearing", "speed", "time")
_MAX_EPOCH_SECONDS = 2e10
"""Where pydantic (and so the official client's GPS path) stops reading a number as seconds: 2603-10-11."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)
_TOPIC_TYPES = {"telemetry.signals": "signal_batch", "telemetry.dtcs": "dtc_batch", "telemetry.gps": "gps_batch",
                "telemetry.netstats": "network_stats"}


# --- input checks: one error, naming the argument ------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, what: str, *, optional: bool = True) -> float | None:
    """A float from an int or float (None when optional); text, booleans and the rest are refused."""
    if value is None and optional:
        return None
    if not _is_number(value):
        raise ValueError(f"{what}: {value!r} is not a number")
    return float(value)


def _integer(value: Any, what: str, *, optional: bool = False) -> int | None:
    """An int from an int or an integral float; anything else (text, booleans, 12.5) is refused."""
    if value is None and optional:
        return None
    if _is_number(value) and (isinstance(value, int) or (math.isfinite(value) and value.is_integer())):
        return int(value)
    raise ValueError(f"{what}: {value!r} is not an integer")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {type(value).__name__} {value!r}")
    return value


def _optional_text(source: Mapping[str, Any], key: str, what: str, absent: list[str], nulls: list[str]) -> str:
    """A string key as the record stores it: its text, or "" with the key noted as left out or given None."""
    if key not in source:
        absent.append(key)
        return ""
    if source[key] is None:
        nulls.append(key)
        return ""
    return _text(source[key], f"{what}.{key}")


def _boolean(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{what}: {value!r} is not a boolean")


# --- times ------------------------------------------------------------------------------------------------------

def _ms_of(moment: datetime) -> int:
    """Epoch milliseconds of `moment` (naive means UTC), rounded half up, in integer arithmetic."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ((moment - _EPOCH) // timedelta(microseconds=1) + 500) // 1000


def _from_epoch_seconds(value: float, what: str) -> datetime:
    """A number in `time`, read as epoch seconds as the official client reads it; epoch ms is refused."""
    if not math.isfinite(value) or abs(value) > _MAX_EPOCH_SECONDS:
        raise ValueError(f"{what}: {value!r} is not a time: a number is read as epoch seconds (as the official "
                         f"client reads it) and this one is past the year 2603; for epoch milliseconds divide by "
                         f"1000 or give ISO-8601 text")
    return datetime.fromtimestamp(value, tz=UTC)


def _from_iso(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not ISO-8601 (e.g. 2025-07-28T12:34:56.789Z)") from None


def _as_pydantic_prints(value: Any, what: str) -> datetime:
    """A DTC's or GPS fix's time as the official client's pydantic models parse it (their wire text is its
    `isoformat()`)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a time")
    try:
        return _DATETIME.validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        raise ValueError(f"{what}: {value!r} is not a time ({exc.errors()[0]['msg']})") from None


def _iso_z(ms: int) -> str:
    """What the GraphQL forwarder sends for a time it has only as epoch ms
    (`fleetstream.sinks.graphql.payloads.iso_time`)."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}Z" if millis == 0 else f"{moment}.{millis:03d}Z"


def _time_text(text: str, ms: int) -> str | None:
    """The text to keep beside `ms`: None when the forwarder's own rendering of `ms` is that text already."""
    return None if text == _iso_z(ms) else text


def parse_time_ms(value: Any, what: str) -> int:
    """ISO-8601 text (UTC when no zone is given), a datetime, or epoch seconds, to epoch milliseconds.

    Numbers are seconds, as the official client reads them; one past 2e10 (epoch milliseconds, most likely)
    is a `ValueError`, never silently read as a date in a far future.
    """
    if value is None or isinstance(value, bool):
        raise ValueError(f"{what}: missing required 'time'" if value is None else f"{what}: {value!r} is not a time")
    if isinstance(value, datetime):
        return _ms_of(value)
    if isinstance(value, str):
        return _ms_of(_from_iso(value, what))
    if _is_number(value):
        return _ms_of(_from_epoch_seconds(value, what))
    raise ValueError(f"{what}: time must be ISO-8601 text or epoch seconds, got {type(value).__name__}")


def _signal_time(point: Mapping[str, Any], what: str) -> tuple[int, str | None]:
    """(epoch ms, the text the official client sends) of one signal point; text None for `timestamp` points."""
    if "timestamp" in point:
        if "time" in point:
            raise ValueError(f"{what}: give 'time' or 'timestamp', not both")
        stamp = point["timestamp"]
        if not _is_number(stamp) or not math.isfinite(stamp) or abs(stamp) > _MAX_EPOCH_SECONDS * 1000:
            raise ValueError(f"{what}.timestamp: {stamp!r} is not epoch milliseconds")
        return round(stamp), None
    value = point.get("time")
    if value is None:
        raise ValueError(f"{what}: missing required 'time'")
    if isinstance(value, str):
        return _ms_of(_from_iso(value, f"{what}.time")), value  # the official client sends the text as given
    if isinstance(value, datetime):
        return _ms_of(value), value.isoformat()
    if _is_number(value):
        moment = _from_epoch_seconds(value, f"{what}.time")
        return _ms_of(moment), moment.isoformat()
    raise ValueError(f"{what}.time: expected ISO-8601 text or epoch seconds, got {type(value).__name__} {value!r}")


def _dtc_time(value: Any, what: str) -> tuple[int, str]:
    """(epoch ms, wire text) of a DTC time: numbers as epoch seconds, then pydantic's reading, as the official."""
    if _is_number(value):
        value = _from_epoch_seconds(value, what).isoformat()
    moment = _as_pydantic_prints(value, what)
    return _ms_of(moment), moment.isoformat()


def _gps_time(value: Any, what: str) -> tuple[int, str]:
    """(epoch ms, wire text) of a GPS time: pydantic's reading, numbers included (s up to 2e10, then ms)."""
    moment = _as_pydantic_prints(value, what)
    return _ms_of(moment), moment.isoformat()


def normalize_param_type(value: str | None) -> str:
    """The official client's rule: RawValue→RAW, State Encoded→ENCODED, NUMBER→RAW, string→STRING, else TEXT.

    An empty value stays empty (the backend's paramType is then null).
    """
    if not value:
        return ""
    return _PARAM_TYPES.get(value, "TEXT")


def _bytes_of(item: Any, what: str) -> str:
    if isinstance(item, Mapping) and isinstance(item.get("bytes"), str):
        return str(item["bytes"])
    if isinstance(item, str):
        return item
    raise ValueError(f"{what}: extended/snapshot items must be {{'bytes': '...'}}, got {item!r}")


def _positive(value: Any, name: str, kind: type, minimum: float) -> None:
    ok = _is_number(value) and (kind is float or isinstance(value, int)) and math.isfinite(value)
    if not ok or value < minimum:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {expected} >= {minimum:g}, got {type(value).__name__} {value!r}")


class IcsAnalytics:
    """The device client (see the module docstring). Thread-safe; one instance per device and vehicle."""

    def __init__(
        self,
        device_id: int,
        vehicle_id: int,
        fleet_id: int,
        org_id: int,
        graphql_endpoint: str | None = None,
        batch_size: int = 100,
        batch_interval_seconds: float = 10,
        max_signal_count: int = 100,
        *,
        kafka: KafkaSettings | None = None,
        bootstrap_servers: str | None = None,
        settings: Settings | None = None,
        spool_dir: Path | str | None = None,
        spool_budget_mb: int = 512,
        source: str = "vehicle_client",
        debug: bool = False,
    ):
        """Check the arguments, open the spool and start the publisher thread.

        The first eight arguments are the official client's (`graphql_endpoint` and `debug` are accepted and
        unused: the GraphQL forwarder posts to the backend). Kafka: `kafka`, else `bootstrap_servers` over the
        configured Kafka settings, else `settings.kafka`, else the fleetstream configuration (environment
        and `FLEETSTREAM_CONFIG`). Spool: `spool_dir`, else `<home>/vehicle-client/<device>-<vehicle>` with
        `home` from `settings` or `FLEETSTREAM_HOME`.
        """
        for name, value in (("device_id", device_id), ("vehicle_id", vehicle_id), ("fleet_id", fleet_id),
                            ("org_id", org_id)):
            if value is None:
                raise ValueError(f"{name} is required")
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
        _positive(batch_size, "batch_size", int, 1)
        _positive(max_signal_count, "max_signal_count", int, 1)
        _positive(batch_interval_seconds, "batch_interval_seconds", float, 0.1)
        _positive(spool_budget_mb, "spool_budget_mb", int, 1)
        if kafka is not None and bootstrap_servers is not None:
            raise ValueError("give kafka= or bootstrap_servers=, not both")
        self.ids = {"org_id": str(org_id), "fleet_id": str(fleet_id), "vehicle_id": str(vehicle_id),
                    "device_id": str(device_id)}
        self.graphql_endpoint = graphql_endpoint  # kept for signature compatibility; the forwarder posts
        self.debug = debug
        self.batch_size = batch_size
        self.batch_interval_seconds = batch_interval_seconds
        self.max_signal_count = max_signal_count
        self.source = source
        if settings is None and (kafka is None or spool_dir is None):
            settings = load_settings()
        if kafka is None:
            assert settings is not None
            kafka = settings.kafka
            if bootstrap_servers is not None:
                kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        self.kafka = kafka
        """The Kafka settings this client publishes with."""
        if spool_dir is None:
            assert settings is not None
            spool_dir = settings.home / "vehicle-client" / f"{device_id}-{vehicle_id}"
        self.spool_dir = Path(spool_dir)
        """Where records wait, on disk, until the broker acknowledged them."""
        self._codec = serializer(kafka.schema_registry_url)
        self._producer = EdgeProducer(kafka, self._codec)
        self._spool = Spool(self.spool_dir, budget_bytes=spool_budget_mb * 1024 * 1024)
        self._pending_samples = 0
        self._pending_records = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._publish_loop, name="ics-analytics-publisher", daemon=True)
        self._thread.start()

    # --- the official client's methods -----------------------------------------------------------------

    def add_signal(self, signal: dict[str, Any] | None = None) -> None:
        """Spool one signal with its `data` points, split into messages of at most `batch_size` points.

        Keys as in the official client: name, unit (required), messageName, networkName, ecuName, ecuId, arbId,
        requestCode, fileId, messageDate, paramType, signalType, paramId, and data: [{value, svalue, time}].
        """
        if not signal or not isinstance(signal, dict):
            raise ValueError("'signal' should be a dict")
        records = list(self._signal_records(signal))
        self._append([("telemetry.signals", r) for r in records])

    def add_dtc(self, dtc: dict[str, Any] | None = None) -> None:
        """Spool the trouble codes of one DTC message: data: [{dtcId, status, description, time, extended,
        snapshot}], plus messageName or name and the message keys of `add_signal`."""
        if not dtc or not isinstance(dtc, dict):
            raise ValueError("'dtc' should be a dict")
        self._append([("telemetry.dtcs", self._dtc_record(dtc))])

    def add_gps(self, gps: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        """Spool one GPS fix or a list of them: time (required), latitude, longitude, accuracy, altitude,
        speed, bearing, available: {accuracy, altitude, bearing, speed, time}."""
        if not gps:
            raise ValueError("Missing GPS data")
        if not isinstance(gps, dict | list):
            raise ValueError("GPS data must be a dict or list of dicts")
        points = [self._gps_point(p, i) for i, p in enumerate([gps] if isinstance(gps, dict) else gps)]
        chunks = [points[i:i + self.batch_size] for i in range(0, len(points), self.batch_size)]
        self._append([("telemetry.gps", {**self._header(), "points": chunk}) for chunk in chunks])

    def add_network_stats(self, variables: dict[str, Any] | None = None) -> None:
        """Spool one network's statistics: name, totalMessages, matchedMessages, unmatchedMessages,
        errorMessages, longMessageParts, rate (required), uploadId, fileId, minTime, maxTime, and vehicleId,
        which only backends keying network stats by vehicle id receive (as from the official client)."""
        if not variables:
            raise ValueError("Missing 'variables' dictionary")
        if not isinstance(variables, dict):
            raise ValueError("'variables' must be a dictionary")
        self._append([("telemetry.netstats", self._netstats_record(variables))])

    def flush(self, timeout_s: float = 60.0) -> None:
        """Publish everything added so far and wait for the broker's acknowledgement.

        Raises `TimeoutError` when data is still unacknowledged after `timeout_s`; it stays spooled on disk
        and is sent when the broker is reachable.
        """
        self._wake.set()
        deadline = threading.Event()
        waited = 0.0
        while self._spool.pending_bytes() > 0:
            if waited >= timeout_s:
                raise TimeoutError(f"flush: data still spooled after {timeout_s:.0f} s (it stays on disk and is "
                                   f"sent when the broker is reachable)")
            self._wake.set()
            deadline.wait(0.05)
            waited += 0.05

    def close(self, timeout_s: float = 60.0) -> None:
        """Flush, then stop the publisher. Data that could not be sent stays spooled for the next start."""
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=5)
            self._spool.close()

    def __enter__(self) -> IcsAnalytics:
        """The client itself; leaving the block closes it (flush included)."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the client (see `close`)."""
        self.close()

    @property
    def delivered_samples(self) -> int:
        """Samples the broker has acknowledged since this client started."""
        return sum(self._producer.delivered_samples.values())

    # --- building records ------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {"batch_id": str(uuid.uuid4()), "source": self.source, **self.ids}

    def _message_fields(self, given: dict[str, Any], what: str) -> dict[str, Any]:
        """The message descriptor fields of a signal or DTC, with which of them were left out or None."""
        absent: list[str] = []
        nulls: list[str] = []
        fields: dict[str, Any] = {
            snake: _optional_text(given, camel, what, absent, nulls)
            for camel, snake in zip(_MESSAGE_KEYS, ("network_name", "ecu_name", "ecu_id", "arb_id", "file_id",
                                                    "message_date"), strict=True)}
        request_code = given.get("requestCode")
        fields["request_code"] = None if request_code is None else _text(request_code, f"{what}.requestCode")
        message_name = given.get("messageName")
        fields["message_name"] = "" if message_name is None else _text(message_name, f"{what}.messageName")
        return {**fields, "absent_fields": absent, "null_fields": nulls}

    def _signal_records(self, signal: dict[str, Any]) -> Iterable[dict[str, Any]]:
        name = signal.get("name")
        if not name:
            raise ValueError("signal: missing required 'name'")
        what = f"signal {_text(name, 'signal.name')!r}"
        if signal.get("unit") is None:
            raise ValueError(f"{what}: missing required 'unit'")
        unit = _text(signal["unit"], f"{what}.unit")
        signal_type = _text(signal.get("signalType") or "", f"{what}.signalType").upper()
        if signal_type and signal_type not in _SIGNAL_TYPES:
            raise ValueError(f"{what}: invalid signalType {signal.get('signalType')!r}; "
                             f"expected one of {', '.join(sorted(_SIGNAL_TYPES))}")
        param_type = normalize_param_type(_text(signal.get("paramType") or "", f"{what}.paramType"))
        data = signal.get("data")
        if not isinstance(data, list):
            raise ValueError(f"{what}: 'data' must be a list of {{value, svalue, time}}")
        samples = [_signal_sample(point, f"{what} data[{i}]") for i, point in enumerate(data)]
        descriptor = self._message_fields(signal, what)
        # paramId is not a message key: the official client sends "" when it is left out, null when None.
        descriptor["param_id"] = _optional_text(signal, "paramId", what, descriptor["absent_fields"],
                                                descriptor["null_fields"])
        descriptor.update(name=name, unit=unit, param_type=param_type, signal_type=signal_type)
        for start in range(0, max(1, len(samples)), self.batch_size):
            yield {**self._header(), **descriptor, "samples": samples[start:start + self.batch_size]}

    def _dtc_record(self, dtc: dict[str, Any]) -> dict[str, Any]:
        data = dtc.get("data")
        if not isinstance(data, list) or not data:
            raise ValueError("dtc: 'data' must be a non-empty list of {dtcId, status, description, time}")
        items = [_dtc_item(item, f"dtc data[{i}]") for i, item in enumerate(data)]
        name = dtc.get("name")
        descriptor = self._message_fields(dtc, "dtc")
        if not (descriptor["message_name"] or (isinstance(name, str) and name)):
            raise ValueError("dtc: missing required 'messageName' or 'name' (the message the codes belong to)")
        return {**self._header(), **descriptor, "name": "" if name is None else _text(name, "dtc.name"),
                "dtcs": items}

    def _gps_point(self, point: Any, index: int) -> dict[str, Any]:
        what = f"gps[{index}]"
        if not isinstance(point, Mapping):
            raise ValueError(f"{what}: expected a dict, got {type(point).__name__} {point!r}")
        if point.get("time") in (None, ""):
            raise ValueError(f"{what}: missing required 'time'")
        timestamp_ms, text = _gps_time(point["time"], f"{what}.time")
        unset: list[str] = []
        available = point.get("available")
        flags: dict[str, bool] | None = None
        if available is not None:
            if not isinstance(available, Mapping):
                raise ValueError(f"{what}.available: expected a dict of booleans, got {available!r}")
            flags = {}
            for key in _AVAILABLE:
                flag = _boolean(available.get(key), f"{what}.available.{key}")
                if flag is None:
                    unset.append(f"available.{key}")
                flags[key] = bool(flag)
        return {
            "timestamp_ms": timestamp_ms,
            **{field: _number(point.get(key), f"{what}.{key}") for key, field in (
                ("latitude", "latitude"), ("longitude", "longitude"), ("accuracy", "accuracy_m"),
                ("altitude", "altitude_m"), ("speed", "speed"), ("bearing", "bearing_deg"))},
            "available": flags, "time_text": _time_text(text, timestamp_ms), "null_fields": unset,
        }

    def _netstats_record(self, variables: dict[str, Any]) -> dict[str, Any]:
        required = ("name", "totalMessages", "matchedMessages", "unmatchedMessages", "errorMessages",
                    "longMessageParts", "rate")
        missing = [k for k in required if variables.get(k) is None]
        if missing:
            raise ValueError(f"network stats: missing required {', '.join(missing)}")
        counts = {snake: _integer(variables[camel], f"network stats {camel}") for camel, snake in (
            ("totalMessages", "total_messages"), ("matchedMessages", "matched_messages"),
            ("unmatchedMessages", "unmatched_messages"), ("errorMessages", "error_messages"),
            ("longMessageParts", "long_message_parts"))}
        absent: list[str] = []
        nulls: list[str] = []
        file_id = _optional_text(variables, "fileId", "network stats", absent, nulls)
        min_ms, min_text = _netstats_time(variables.get("minTime"), "network stats minTime")
        max_ms, max_text = _netstats_time(variables.get("maxTime"), "network stats maxTime")
        return {**self._header(), "timestamp_ms": max_ms if max_ms is not None else _ms_of(datetime.now(UTC)),
                "name": _text(variables["name"], "network stats name"),
                "upload_id": _integer(variables.get("uploadId"), "network stats uploadId", optional=True),
                "input_vehicle_id": _integer(variables.get("vehicleId"), "network stats vehicleId", optional=True),
                "file_id": file_id, **counts, "min_time_ms": min_ms, "max_time_ms": max_ms,
                "rate": _number(variables["rate"], "network stats rate", optional=False),
                "min_time_text": min_text, "max_time_text": max_text, "absent_fields": absent, "null_fields": nulls}

    # --- durability and publishing ----------------------------------------------------------------

    def _append(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        if self._closed:
            raise RuntimeError("the client is closed")
        entries = []
        for topic, record in records:
            record_type = _TOPIC_TYPES[topic]
            entries.append(SpoolEntry(topic, self.ids["vehicle_id"].encode(),
                                      self._codec.encode(record_type, record, topic),
                                      sample_count(record_type, record), self.source))
        if not self._spool.append(entries, "normal"):
            raise RuntimeError("the local spool is full (disk budget); the data was not stored")
        self._pending_samples += sum(e.samples for e in entries)
        self._pending_records += len(entries)
        if self._pending_samples >= self.batch_size or self._pending_records >= self.max_signal_count:
            self._wake.set()

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.batch_interval_seconds)
            self._wake.clear()
            self._pending_samples = self._pending_records = 0
            try:
                while self._spool.drain_once(self._producer.publish_acknowledged) and not self._stop.is_set():
                    pass
            except Exception:
                log.exception("publishing the spool failed; retrying at the next interval")


def _signal_sample(point: Any, what: str) -> dict[str, Any]:
    if not isinstance(point, Mapping):
        raise ValueError(f"{what}: expected a dict with value/svalue/time, got {type(point).__name__} {point!r}")
    if "value" not in point and "svalue" not in point:
        raise ValueError(f"{what}: has neither 'value' nor 'svalue' (the official client would drop it silently)")
    timestamp_ms, text = _signal_time(point, what)
    svalue = point.get("svalue")
    return {"timestamp_ms": timestamp_ms, "value": _number(point.get("value"), f"{what}.value"),
            "svalue": None if svalue is None else _text(svalue, f"{what}.svalue"), "flags": 0,
            "time_text": None if text is None else _time_text(text, timestamp_ms)}


def _dtc_item(item: Any, what: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise ValueError(f"{what}: expected a dict with dtcId, status, description and time, "
                         f"got {type(item).__name__} {item!r}")
    missing = [k for k in ("dtcId", "status", "description", "time") if item.get(k) is None]
    if missing:
        raise ValueError(f"{what}: missing required {', '.join(missing)}")
    timestamp_ms, text = _dtc_time(item["time"], f"{what}.time")
    unset = [key for key in ("extended", "snapshot") if item.get(key) is None]
    lists: dict[str, list[str]] = {}
    for key in ("extended", "snapshot"):
        given = item.get(key)
        if given is not None and not isinstance(given, list):
            raise ValueError(f"{what}.{key}: expected a list of {{'bytes': '...'}}, got {given!r}")
        lists[key] = [_bytes_of(b, f"{what}.{key}") for b in given or []]
    return {"dtc_id": _text(item["dtcId"], f"{what}.dtcId"), "status": _text(item["status"], f"{what}.status"),
            "description": _text(item["description"], f"{what}.description"), "timestamp_ms": timestamp_ms,
            **lists, "time_text": _time_text(text, timestamp_ms), "null_fields": unset}


def _netstats_time(value: Any, what: str) -> tuple[int | None, str | None]:
    """(epoch ms, text) of minTime/maxTime: the official client sends the text as given, so it must be text."""
    if value is None:
        return None, None
    text = _text(value, what)
    return (_ms_of(_from_iso(text, what)) if text.strip() else None), text


class AsyncIcsAnalytics:
    """The same client for asyncio code: `async with AsyncIcsAnalytics(...) as client: await client.add_signal(...)`.

    Disk writes and broker waits run in a worker thread, so the event loop is never blocked.
    """

    def __init__(
        self,
        device_id: int,
        vehicle_id: int,
        fleet_id: int,
        org_id: int,
        graphql_endpoint: str | None = None,
        batch_size: int = 100,
        batch_interval_seconds: float = 10,
        max_signal_count: int = 100,
        *,
        kafka: KafkaSettings | None = None,
        bootstrap_servers: str | None = None,
        settings: Settings | None = None,
        spool_dir: Path | str | None = None,
        spool_budget_mb: int = 512,
        source: str = "vehicle_client",
        debug: bool = False,
    ):
        """The arguments of `IcsAnalytics`, which this wraps."""
        self._client = IcsAnalytics(
            device_id, vehicle_id, fleet_id, org_id, graphql_endpoint, batch_size, batch_interval_seconds,
            max_signal_count, kafka=kafka, bootstrap_servers=bootstrap_servers, settings=settings,
            spool_dir=spool_dir, spool_budget_mb=spool_budget_mb, source=source, debug=debug)

    @property
    def client(self) -> IcsAnalytics:
        """The synchronous client underneath (its `kafka`, `spool_dir`, `delivered_samples`)."""
        return self._client

    async def add_signal(self, signal: dict[str, Any] | None = None) -> None:
        """`IcsAnalytics.add_signal` off the event loop."""
        await asyncio.to_thread(self._client.add_signal, signal)

    async def add_dtc(self, dtc: dict[str, Any] | None = None) -> None:
        """`IcsAnalytics.add_dtc` off the event loop."""
        await asyncio.to_thread(self._client.add_dtc, dtc)

    async def add_gps(self, gps: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        """`IcsAnalytics.add_gps` off the event loop."""
        await asyncio.to_thread(self._client.add_gps, gps)

    async def add_network_stats(self, variables: dict[str, Any] | None = None) -> None:
        """`IcsAnalytics.add_network_stats` off the event loop."""
        await asyncio.to_thread(self._client.add_network_stats, variables)

    async def flush(self, timeout_s: float = 60.0) -> None:
        """`IcsAnalytics.flush` off the event loop."""
        await asyncio.to_thread(self._client.flush, timeout_s)

    async def close(self, timeout_s: float = 60.0) -> None:
        """`IcsAnalytics.close` off the event loop."""
        await asyncio.to_thread(self._client.close, timeout_s)

    async def __aenter__(self) -> AsyncIcsAnalytics:
        """The client itself; leaving the block closes it (flush included)."""
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Close the client (see `close`)."""
        await self.close()
