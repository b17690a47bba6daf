"""A drop-in for the public `IcsAnalytics` device client that publishes to Kafka through a durable spool.

Same constructor arguments, same methods, same input dicts and the same validation as
`ics-wivi-analytics-ingest` (the backend's device client): existing device code changes one import. The
difference is durability: every `add_*` writes the record to the local spool (fsync'd) before it returns,
so a process killed right after still delivers it; a background thread publishes the spool to Kafka,
batched by count (`batch_size` samples or `max_signal_count` records) and by time
(`batch_interval_seconds`). The GraphQL backend is then fed by the fleetstream GraphQL forwarder.

    from producers.vehicle_client import IcsAnalytics      # was: from analytics_ingest import IcsAnalytics
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from fleetstream.config import KafkaSettings
from producers.edge import EdgeProducer
from producers.spool import Spool, SpoolEntry
from schemas.codec import Codec
from schemas.topics import sample_count

__all__ = ["AsyncIcsAnalytics", "IcsAnalytics", "normalize_param_type", "parse_time_ms"]

log = logging.getLogger(__name__)

_SIGNAL_TYPES = {"SIGNAL", "DID", "PID", "DMR"}
_PARAM_TYPES = {"RawValue": "RAW", "State Encoded": "ENCODED", "NUMBER": "RAW", "string": "STRING"}


def normalize_param_type(value: str | None) -> str:
    """The public client's rule: RawValue→RAW, State Encoded→ENCODED, NUMBER→RAW, string→STRING, else TEXT.

    An empty value stays empty (the backend's paramType is then null).
    """
    if not value:
        return ""
    return _PARAM_TYPES.get(value, "TEXT")


def parse_time_ms(value: Any, what: str) -> int:
    """ISO-8601 text (UTC when no zone is given) or epoch seconds, as the public client accepts, to epoch ms."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what}: missing required 'time'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: time {value!r} is not a finite number")
        return round(value * 1000)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what}: time {value!r} is not ISO-8601 (e.g. 2025-07-28T12:34:56.789Z)") from None
    else:
        raise ValueError(f"{what}: time must be ISO-8601 text or epoch seconds, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)


def _optional_float(value: Any, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a number") from None


class IcsAnalytics:
    """The device client (see the module docstring). Thread-safe; one instance per device and vehicle.

    Kafka settings: pass `kafka=KafkaSettings(...)` or `bootstrap_servers="host:9092"`. The spool lives in
    `spool_dir` (default `.fleetstream/vehicle-client/<device>-<vehicle>`).
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
        spool_dir: Path | str | None = None,
        spool_budget_mb: int = 512,
        source: str = "vehicle_client",
        debug: bool = False,
    ):
        for name, value in (("device_id", device_id), ("vehicle_id", vehicle_id), ("fleet_id", fleet_id),
                            ("org_id", org_id)):
            if value is None or str(value).strip() == "":
                raise ValueError(f"{name} is required")
        if batch_size < 1 or max_signal_count < 1 or batch_interval_seconds < 0.1:
            raise ValueError("batch_size and max_signal_count must be >= 1, batch_interval_seconds >= 0.1")
        self.ids = {"org_id": str(org_id), "fleet_id": str(fleet_id), "vehicle_id": str(vehicle_id),
                    "device_id": str(device_id)}
        self.graphql_endpoint = graphql_endpoint  # kept for signature compatibility; the forwarder posts
        self.batch_size = batch_size
        self.batch_interval_seconds = batch_interval_seconds
        self.max_signal_count = max_signal_count
        self.source = source
        if kafka is None:
            kafka = KafkaSettings(bootstrap_servers=bootstrap_servers) if bootstrap_servers else KafkaSettings()
        self._codec = Codec(kafka.schema_registry_url)
        self._producer = EdgeProducer(kafka, self._codec)
        directory = Path(spool_dir) if spool_dir else Path(".fleetstream/vehicle-client") / f"{device_id}-{vehicle_id}"
        self._spool = Spool(directory, budget_bytes=spool_budget_mb * 1024 * 1024)
        self._pending_samples = 0
        self._pending_records = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._publish_loop, name="ics-analytics-publisher", daemon=True)
        self._thread.start()

    # --- the public client's methods ---------------------------------------------------------------

    def add_signal(self, signal: dict[str, Any] | None = None) -> None:
        """One signal with its `data` points; split into messages of at most `batch_size` samples."""
        if not signal or not isinstance(signal, dict):
            raise ValueError("'signal' should be a dict")
        records = list(self._signal_records(signal))
        self._append([("telemetry.signals", r) for r in records])

    def add_dtc(self, dtc: dict[str, Any] | None = None) -> None:
        if not dtc or not isinstance(dtc, dict):
            raise ValueError("'dtc' should be a dict")
        self._append([("telemetry.dtcs", self._dtc_record(dtc))])

    def add_gps(self, gps: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        """One GPS fix or a list of them."""
        if not gps:
            raise ValueError("Missing GPS data")
        if not isinstance(gps, dict | list):
            raise ValueError("GPS data must be a dict or list of dicts")
        points = [self._gps_point(p, i) for i, p in enumerate([gps] if isinstance(gps, dict) else gps)]
        chunks = [points[i:i + self.batch_size] for i in range(0, len(points), self.batch_size)]
        self._append([("telemetry.gps", {**self._header(), "points": chunk}) for chunk in chunks])

    def add_network_stats(self, variables: dict[str, Any] | None = None) -> None:
        if not variables:
            raise ValueError("Missing 'variables' dictionary")
        self._append([("telemetry.netstats", self._netstats_record(variables))])

    def flush(self, timeout_s: float = 60.0) -> None:
        """Publish everything added so far and wait for the broker's acknowledgement."""
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
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def delivered_samples(self) -> int:
        return sum(self._producer.delivered_samples.values())

    # --- building records ------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {"batch_id": str(uuid.uuid4()), "source": self.source, **self.ids}

    def _signal_records(self, signal: dict[str, Any]) -> Iterable[dict[str, Any]]:
        name = signal.get("name")
        if not name:
            raise ValueError("signal: missing required 'name'")
        if signal.get("unit") is None:
            raise ValueError(f"signal {name!r}: missing required 'unit'")
        signal_type = str(signal.get("signalType") or "").upper()
        if signal_type and signal_type not in _SIGNAL_TYPES:
            raise ValueError(f"signal {name!r}: invalid signalType {signal.get('signalType')!r}; "
                             f"expected one of {', '.join(sorted(_SIGNAL_TYPES))}")
        data = signal.get("data")
        if not isinstance(data, list):
            raise ValueError(f"signal {name!r}: 'data' must be a list of {{value, svalue, time}}")
        samples = [self._signal_sample(point, f"signal {name!r} data[{i}]") for i, point in enumerate(data)]
        descriptor = {
            "name": str(name), "unit": str(signal["unit"]),
            "message_name": str(signal.get("messageName") or ""), "network_name": str(signal.get("networkName") or ""),
            "ecu_name": str(signal.get("ecuName") or ""), "ecu_id": str(signal.get("ecuId") or ""),
            "arb_id": str(signal.get("arbId") or ""), "file_id": str(signal.get("fileId") or ""),
            "message_date": str(signal.get("messageDate") or ""),
            "param_type": normalize_param_type(signal.get("paramType")), "signal_type": signal_type,
            "param_id": str(signal.get("paramId") or ""),
        }
        for start in range(0, max(1, len(samples)), self.batch_size):
            yield {**self._header(), **descriptor, "samples": samples[start:start + self.batch_size]}

    def _signal_sample(self, point: Any, what: str) -> dict[str, Any]:
        if not isinstance(point, dict):
            raise ValueError(f"{what}: expected a dict with value/svalue/time")
        if "time" in point:
            timestamp_ms = parse_time_ms(point["time"], what)
        elif "timestamp" in point and isinstance(point["timestamp"], int | float):
            timestamp_ms = int(point["timestamp"])  # the public client reads `timestamp` as epoch ms
        else:
            raise ValueError(f"{what}: missing required 'time'")
        svalue = point.get("svalue")
        return {"timestamp_ms": timestamp_ms, "value": _optional_float(point.get("value"), what),
                "svalue": None if svalue is None else str(svalue), "flags": 0}

    def _dtc_record(self, dtc: dict[str, Any]) -> dict[str, Any]:
        label = dtc.get("messageName") or dtc.get("name") or "dtc"
        data = dtc.get("data")
        if not isinstance(data, list) or not data:
            raise ValueError(f"dtc {label!r}: 'data' must be a non-empty list")
        items = []
        for i, item in enumerate(data):
            what = f"dtc {label!r} data[{i}]"
            missing = [k for k in ("dtcId", "status", "description", "time") if item.get(k) in (None, "")]
            if missing:
                raise ValueError(f"{what}: missing required {', '.join(missing)}")
            items.append({"dtc_id": str(item["dtcId"]), "status": str(item["status"]),
                          "description": str(item["description"]), "timestamp_ms": parse_time_ms(item["time"], what),
                          "extended": [_bytes_of(b, what) for b in item.get("extended") or []],
                          "snapshot": [_bytes_of(b, what) for b in item.get("snapshot") or []]})
        return {**self._header(), "name": str(dtc.get("name") or ""), "message_name": str(dtc.get("messageName") or ""),
                "network_name": str(dtc.get("networkName") or ""), "ecu_name": str(dtc.get("ecuName") or ""),
                "ecu_id": str(dtc.get("ecuId") or ""), "arb_id": str(dtc.get("arbId") or ""),
                "file_id": str(dtc.get("fileId") or ""), "message_date": str(dtc.get("messageDate") or ""),
                "dtcs": items}

    def _gps_point(self, point: Any, index: int) -> dict[str, Any]:
        what = f"gps[{index}]"
        if not isinstance(point, dict):
            raise ValueError(f"{what}: expected a dict")
        if point.get("time") in (None, ""):
            raise ValueError(f"{what}: missing required 'time'")
        available = point.get("available")
        return {
            "timestamp_ms": parse_time_ms(point["time"], what),
            "latitude": _optional_float(point.get("latitude"), f"{what} latitude"),
            "longitude": _optional_float(point.get("longitude"), f"{what} longitude"),
            "accuracy_m": _optional_float(point.get("accuracy"), f"{what} accuracy"),
            "altitude_m": _optional_float(point.get("altitude"), f"{what} altitude"),
            "speed": _optional_float(point.get("speed"), f"{what} speed"),
            "bearing_deg": _optional_float(point.get("bearing"), f"{what} bearing"),
            "available": None if not isinstance(available, dict) else {
                key: bool(available.get(key)) for key in ("accuracy", "altitude", "bearing", "speed", "time")},
        }

    def _netstats_record(self, variables: dict[str, Any]) -> dict[str, Any]:
        required = ("name", "totalMessages", "matchedMessages", "unmatchedMessages", "errorMessages",
                    "longMessageParts", "rate")
        missing = [k for k in required if variables.get(k) is None]
        if missing:
            raise ValueError(f"network stats: missing required {', '.join(missing)}")
        min_ms = parse_time_ms(variables["minTime"], "network stats minTime") if variables.get("minTime") else None
        max_ms = parse_time_ms(variables["maxTime"], "network stats maxTime") if variables.get("maxTime") else None
        try:
            counts = {snake: int(variables[camel]) for camel, snake in (
                ("totalMessages", "total_messages"), ("matchedMessages", "matched_messages"),
                ("unmatchedMessages", "unmatched_messages"), ("errorMessages", "error_messages"),
                ("longMessageParts", "long_message_parts"))}
            rate = float(variables["rate"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"network stats: counts must be integers and rate a number ({exc})") from None
        upload_id = variables.get("uploadId")
        return {**self._header(), "timestamp_ms": max_ms or round(datetime.now(UTC).timestamp() * 1000),
                "name": str(variables["name"]), "upload_id": None if upload_id is None else int(upload_id),
                "file_id": str(variables.get("fileId") or ""), **counts, "min_time_ms": min_ms,
                "max_time_ms": max_ms, "rate": rate}

    # --- durability and publishing ----------------------------------------------------------------

    def _append(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        if self._closed:
            raise RuntimeError("the client is closed")
        entries = []
        for topic, record in records:
            record_type = {"telemetry.signals": "signal_batch", "telemetry.dtcs": "dtc_batch",
                           "telemetry.gps": "gps_batch", "telemetry.netstats": "network_stats"}[topic]
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


def _bytes_of(item: Any, what: str) -> str:
    if isinstance(item, dict) and "bytes" in item:
        return str(item["bytes"])
    if isinstance(item, str):
        return item
    raise ValueError(f"{what}: extended/snapshot items must be {{'bytes': '...'}}")


class AsyncIcsAnalytics:
    """The same client for asyncio code: `async with AsyncIcsAnalytics(...) as client: await client.add_signal(...)`.

    Disk writes and broker waits run in a worker thread, so the event loop is never blocked.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self._client = IcsAnalytics(*args, **kwargs)

    async def add_signal(self, signal: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self._client.add_signal, signal)

    async def add_dtc(self, dtc: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self._client.add_dtc, dtc)

    async def add_gps(self, gps: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        await asyncio.to_thread(self._client.add_gps, gps)

    async def add_network_stats(self, variables: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self._client.add_network_stats, variables)

    async def flush(self, timeout_s: float = 60.0) -> None:
        await asyncio.to_thread(self._client.flush, timeout_s)

    async def close(self, timeout_s: float = 60.0) -> None:
        await asyncio.to_thread(self._client.close, timeout_s)

    async def __aenter__(self) -> AsyncIcsAnalytics:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
