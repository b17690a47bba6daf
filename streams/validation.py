"""Validation as data: required fields, NaN and infinity, timestamp skew and horizon, sensor ranges.

A batch is split, not judged whole: its good samples go on to `<topic>.valid` (with warning flags), and its
bad samples leave as dead letters grouped by reason, so every sample ends in exactly one place and the
counts add up. Ranges are per channel and unit (config); `sanitize` mode clamps to the hard limits and
flags the sample instead of rejecting it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetstream.config import ChannelRange, ValidationSettings
from fleetstream.schemas.units import UnknownUnitError, to_canonical
from fleetstream.topics import SAMPLES_FIELD

__all__ = ["FLAG_ABOVE_WARNING", "FLAG_BELOW_WARNING", "FLAG_CLAMPED", "Outcome", "Rejected", "Validator"]

FLAG_BELOW_WARNING = 1
FLAG_ABOVE_WARNING = 2
FLAG_CLAMPED = 4

_REQUIRED: dict[str, tuple[str, ...]] = {
    "signal_batch": ("vehicle_id", "name"),
    "dtc_batch": ("vehicle_id",),
    "gps_batch": ("vehicle_id",),
    "network_stats": ("vehicle_id", "name"),
    "dyno_sample_batch": ("station_id", "channel"),
    "fleet_location_batch": ("provider", "provider_vehicle_id"),
    "fleet_fault_batch": ("provider", "provider_vehicle_id"),
}

_TIME_FIELD: dict[str, str] = {"fleet_fault_batch": "first_observed_ms"}


@dataclass
class Rejected:
    """Samples of one record that failed for one reason, as a record of the same type (for replay)."""

    error_code: str
    reason: str
    record: dict[str, Any]
    sample_count: int


@dataclass
class Outcome:
    valid: dict[str, Any] | None
    rejected: list[Rejected] = field(default_factory=list)
    valid_samples: int = 0
    warnings: int = 0
    clamped: int = 0


class _Failure(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Validator:
    """Checks decoded records against the configured rules; pure, so it is tested without a broker."""

    def __init__(self, settings: ValidationSettings):
        self.settings = settings
        self._ranges: dict[str, ChannelRange] = {}
        for rule in settings.ranges:
            for name in (rule.channel, *rule.aliases):
                self._ranges[name.lower()] = rule
        self._sample_checks: dict[str, Callable[[dict[str, Any], dict[str, Any]], int]] = {
            "signal_batch": self._check_signal,
            "dyno_sample_batch": self._check_dyno,
            "gps_batch": _check_position,
            "fleet_location_batch": _check_position,
            "dtc_batch": _check_dtc,
            "fleet_fault_batch": _check_fault,
        }

    def validate(self, record_type: str, record: dict[str, Any], now_ms: int) -> Outcome:
        """Split one decoded record into its valid part and its rejected parts."""
        missing = [name for name in _REQUIRED.get(record_type, ()) if not str(record.get(name) or "").strip()]
        if missing:
            count = _count(record_type, record)
            return Outcome(None, [Rejected("missing_field", f"required field(s) empty: {', '.join(missing)}",
                                           record, count)])
        if record_type == "network_stats":
            return self._validate_single(record, now_ms)
        return self._validate_batch(record_type, record, now_ms)

    def _validate_single(self, record: dict[str, Any], now_ms: int) -> Outcome:
        try:
            self._check_time(record["timestamp_ms"], now_ms)
            _check_netstats(record)
        except _Failure as failure:
            return Outcome(None, [Rejected(failure.code, failure.reason, record, 1)])
        return Outcome(record, valid_samples=1)

    def _validate_batch(self, record_type: str, record: dict[str, Any], now_ms: int) -> Outcome:
        samples_field = SAMPLES_FIELD[record_type]
        assert samples_field is not None
        check = self._sample_checks[record_type]
        time_field = _TIME_FIELD.get(record_type, "timestamp_ms")
        good: list[dict[str, Any]] = []
        bad: dict[tuple[str, str], list[dict[str, Any]]] = {}
        outcome = Outcome(None)
        for sample in record[samples_field]:
            try:
                self._check_time(sample[time_field], now_ms)
                flags = check(record, sample)
            except _Failure as failure:
                bad.setdefault((failure.code, failure.reason), []).append(sample)
                continue
            if flags:
                sample["flags"] = flags
                outcome.warnings += bool(flags & (FLAG_BELOW_WARNING | FLAG_ABOVE_WARNING))
                outcome.clamped += bool(flags & FLAG_CLAMPED)
            good.append(sample)
        if good:
            outcome.valid = {**record, samples_field: good}
            outcome.valid_samples = len(good)
        outcome.rejected = [Rejected(code, reason, {**record, samples_field: samples}, len(samples))
                            for (code, reason), samples in bad.items()]
        return outcome

    def _check_time(self, timestamp_ms: int, now_ms: int) -> None:
        if timestamp_ms > now_ms + self.settings.max_future_skew_ms:
            raise _Failure("future", f"event time {timestamp_ms} is more than "
                           f"{self.settings.max_future_skew_ms} ms ahead of the worker clock")
        if timestamp_ms < now_ms - self.settings.max_age_ms:
            raise _Failure("too_old", f"event time {timestamp_ms} is older than the "
                           f"{self.settings.max_age_ms} ms horizon")

    def _check_signal(self, record: dict[str, Any], sample: dict[str, Any]) -> int:
        value = sample.get("value")
        if value is None:
            if sample.get("svalue") is None:
                raise _Failure("missing_value", "sample has neither value nor svalue")
            return 0
        return self._check_value(record["name"], record["unit"], sample)

    def _check_dyno(self, record: dict[str, Any], sample: dict[str, Any]) -> int:
        return self._check_value(record["channel"], record["unit"], sample)

    def _check_value(self, channel: str, unit: str, sample: dict[str, Any]) -> int:
        value = sample["value"]
        if math.isnan(value):
            raise _Failure("nan", f"{channel} value is NaN")
        if math.isinf(value):
            raise _Failure("infinite", f"{channel} value is infinite")
        rule = self._ranges.get(channel.lower())
        if rule is None:
            return 0
        try:
            canonical, canonical_unit = to_canonical(value, unit)
        except UnknownUnitError:
            return 0
        if canonical_unit != rule.unit:
            return 0
        return self._apply_range(rule, channel, unit, canonical, sample)

    def _apply_range(self, rule: ChannelRange, channel: str, unit: str, value: float, sample: dict[str, Any]) -> int:
        low, high = rule.hard_min, rule.hard_max
        outside = (low is not None and value < low) or (high is not None and value > high)
        flags = 0
        if outside:
            if self.settings.mode != "sanitize" or unit != rule.unit:
                raise _Failure("out_of_range", f"{channel} = {value:g} {rule.unit} is outside the hard range "
                               f"[{_fmt(low)}, {_fmt(high)}]")
            value = min(max(value, low if low is not None else value), high if high is not None else value)
            sample["value"] = value
            flags |= FLAG_CLAMPED
        if rule.warn_min is not None and value < rule.warn_min:
            flags |= FLAG_BELOW_WARNING
        if rule.warn_max is not None and value > rule.warn_max:
            flags |= FLAG_ABOVE_WARNING
        return flags


def _fmt(limit: float | None) -> str:
    return "-inf" if limit is None else f"{limit:g}"


def _count(record_type: str, record: dict[str, Any]) -> int:
    field_name = SAMPLES_FIELD.get(record_type)
    return 1 if field_name is None else len(record.get(field_name) or ())


def _finite_or_none(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise _Failure("nan" if math.isnan(value) else "infinite", f"{name} is {value}")


def _check_position(record: dict[str, Any], point: dict[str, Any]) -> int:
    lat, lon = point.get("latitude"), point.get("longitude")
    _finite_or_none("latitude", lat)
    _finite_or_none("longitude", lon)
    if lat is not None and not -90.0 <= lat <= 90.0:
        raise _Failure("out_of_range", f"latitude {lat} is outside [-90, 90]")
    if lon is not None and not -180.0 <= lon <= 180.0:
        raise _Failure("out_of_range", f"longitude {lon} is outside [-180, 180]")
    for name in ("speed", "speed_mph", "altitude_m", "accuracy_m", "bearing_deg", "heading_degrees", "odometer_miles"):
        _finite_or_none(name, point.get(name))
    return 0


def _check_dtc(record: dict[str, Any], dtc: dict[str, Any]) -> int:
    if not dtc["dtc_id"].strip():
        raise _Failure("missing_field", "DTC without dtc_id")
    return 0


def _check_fault(record: dict[str, Any], fault: dict[str, Any]) -> int:
    if not fault["code"].strip():
        raise _Failure("missing_field", "fault without code")
    return 0


def _check_netstats(record: dict[str, Any]) -> None:
    counts = ("total_messages", "matched_messages", "unmatched_messages", "error_messages", "long_message_parts")
    negative = [name for name in counts if record[name] < 0]
    if negative:
        raise _Failure("out_of_range", f"negative counts: {', '.join(negative)}")
    if record["matched_messages"] > record["total_messages"]:
        raise _Failure("out_of_range", f"matched_messages {record['matched_messages']} > "
                       f"total_messages {record['total_messages']}")
    _finite_or_none("rate", record["rate"])
