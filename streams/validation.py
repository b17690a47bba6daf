"""Validation as data: required fields, NaN and infinity, timestamp skew and horizon, sensor ranges.

A batch is split, not judged whole: its good samples go on to `<topic>.valid` (with warning flags), and its
bad samples leave as dead letters grouped by reason, so every sample ends in exactly one place and the
counts add up. Ranges are per channel and unit (config); `sanitize` mode clamps to the hard limits and
flags the sample instead of rejecting it.

Signal and dyno batches (`SampleBatch`, nearly all traffic) are judged as masks over their columns: one numpy
expression per rule for the whole batch, the input batch left as it was; only the rejected samples, which are
rare, get a reason string each. The other record types are judged sample by sample on their dicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetstream.config import ChannelRange, ValidationSettings
from fleetstream.schemas.sample_batch import SampleBatch
from fleetstream.schemas.units import UnknownUnitError, to_canonical
from fleetstream.topics import samples_field_of

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
    record: dict[str, Any] | SampleBatch
    sample_count: int


@dataclass
class Outcome:
    valid: dict[str, Any] | SampleBatch | None
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

    def validate(self, record_type: str, record: dict[str, Any] | SampleBatch, now_ms: int) -> Outcome:
        """Split one decoded record into its valid part and its rejected parts."""
        missing = [name for name in _REQUIRED.get(record_type, ()) if not str(record.get(name) or "").strip()]
        if missing:
            count = len(record) if isinstance(record, SampleBatch) else _count(record_type, record)
            return Outcome(None, [Rejected("missing_field", f"required field(s) empty: {', '.join(missing)}",
                                           record, count)])
        if isinstance(record, SampleBatch):
            return self._validate_columns(record, now_ms)
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
        samples_field = samples_field_of(record_type)
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

    def _validate_columns(self, batch: SampleBatch, now_ms: int) -> Outcome:
        """A signal or dyno batch judged with masks: the same verdicts, reasons and flags as sample by sample."""
        codes = np.zeros(len(batch), np.int8)  # _OK, or the first rule a sample fails (rules in checking order)
        ts = batch.timestamp_ms
        codes[ts > now_ms + self.settings.max_future_skew_ms] = _FUTURE
        _fail(codes, ts < now_ms - self.settings.max_age_ms, _TOO_OLD)
        if batch.record_type == "signal_batch":
            channel, unit = str(batch["name"]), str(batch["unit"])
            has_svalue = (np.zeros(len(batch), np.bool_) if batch.svalue is None
                          else np.array([v is not None for v in batch.svalue], np.bool_))
            _fail(codes, ~batch.has_value & ~has_svalue, _MISSING_VALUE)
        else:
            channel, unit = str(batch["channel"]), str(batch["unit"])
        numeric = batch.has_value
        _fail(codes, numeric & np.isnan(batch.value), _NAN)
        _fail(codes, numeric & np.isinf(batch.value), _INFINITE)
        judged = numeric & (codes == _OK)
        canonical, flags, rule = self._range_columns(channel, unit, batch.value, judged, codes)
        good = codes == _OK
        outcome = Outcome(None)
        if good.any():
            kept_flags = np.where(flags != 0, flags, batch.flags)
            clamped = (flags & FLAG_CLAMPED) != 0
            values = np.where(clamped, canonical, batch.value) if clamped.any() else batch.value
            outcome.valid = batch.with_columns(value=values, flags=kept_flags).take(good)
            outcome.valid_samples = int(good.sum())
            outcome.warnings = int(np.count_nonzero(flags[good] & (FLAG_BELOW_WARNING | FLAG_ABOVE_WARNING)))
            outcome.clamped = int(np.count_nonzero(clamped[good]))
        outcome.rejected = self._rejected_groups(batch, codes, canonical, channel, rule)
        return outcome

    def _range_columns(self, channel: str, unit: str, values: FloatArray, judged: BoolArray, codes: CodeArray
                       ) -> tuple[FloatArray, IntArray, ChannelRange | None]:
        """The canonical values, clamped in sanitize mode, and the warning/clamp flags of the `judged` samples;
        marks out-of-range samples in `codes`. No rule, an unknown unit or another canonical unit: no flags."""
        flags = np.zeros(values.size, np.int64)
        rule = self._ranges.get(channel.lower())
        if rule is None or not judged.any():
            return values, flags, rule
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # an infinite result is out of any range, as it was
                converted, canonical_unit = to_canonical(values, unit)  # type: ignore[arg-type]  # affine: arrays
        except UnknownUnitError:
            return values, flags, rule
        if canonical_unit != rule.unit:
            return values, flags, rule
        canonical: FloatArray = np.asarray(converted, np.float64)
        low, high = rule.hard_min, rule.hard_max
        with np.errstate(invalid="ignore"):
            outside = judged & (((canonical < low) if low is not None else False)
                                | ((canonical > high) if high is not None else False))
        if outside.any():
            if self.settings.mode != "sanitize" or unit != rule.unit:
                codes[outside] = _OUT_OF_RANGE
                judged = judged & ~outside
            else:
                canonical = np.clip(canonical, low, high)
                flags[outside] |= FLAG_CLAMPED
        with np.errstate(invalid="ignore"):
            if rule.warn_min is not None:
                flags[judged & (canonical < rule.warn_min)] |= FLAG_BELOW_WARNING
            if rule.warn_max is not None:
                flags[judged & (canonical > rule.warn_max)] |= FLAG_ABOVE_WARNING
        return canonical, flags, rule

    def _rejected_groups(self, batch: SampleBatch, codes: CodeArray, canonical: FloatArray, channel: str,
                         rule: ChannelRange | None) -> list[Rejected]:
        """The rejected samples grouped by (code, reason) in order of first appearance, one batch per group."""
        groups: dict[tuple[str, str], list[int]] = {}
        bad = np.flatnonzero(codes != _OK)
        for i, code, ts, value in zip(bad.tolist(), codes[bad].tolist(), batch.timestamp_ms[bad].tolist(),
                                      canonical[bad].tolist(), strict=True):
            groups.setdefault(self._reason(code, ts, value, channel, rule), []).append(i)
        return [Rejected(code, reason, batch.take(np.array(index, np.int64)), len(index))
                for (code, reason), index in groups.items()]

    def _reason(self, code: int, timestamp_ms: int, value: float, channel: str, rule: ChannelRange | None
                ) -> tuple[str, str]:
        """The error code and reason of one rejected sample, worded as the per-sample checks word them."""
        if code == _FUTURE:
            return "future", self._future_reason(timestamp_ms)
        if code == _TOO_OLD:
            return "too_old", self._too_old_reason(timestamp_ms)
        if code == _MISSING_VALUE:
            return "missing_value", "sample has neither value nor svalue"
        if code == _NAN:
            return "nan", f"{channel} value is NaN"
        if code == _INFINITE:
            return "infinite", f"{channel} value is infinite"
        assert rule is not None
        return "out_of_range", (f"{channel} = {value:g} {rule.unit} is outside the hard range "
                                f"[{_fmt(rule.hard_min)}, {_fmt(rule.hard_max)}]")

    def _check_time(self, timestamp_ms: int, now_ms: int) -> None:
        if timestamp_ms > now_ms + self.settings.max_future_skew_ms:
            raise _Failure("future", self._future_reason(timestamp_ms))
        if timestamp_ms < now_ms - self.settings.max_age_ms:
            raise _Failure("too_old", self._too_old_reason(timestamp_ms))

    def _future_reason(self, timestamp_ms: int) -> str:
        return f"event time {timestamp_ms} is more than {self.settings.max_future_skew_ms} ms ahead of the worker clock"

    def _too_old_reason(self, timestamp_ms: int) -> str:
        return f"event time {timestamp_ms} is older than the {self.settings.max_age_ms} ms horizon"

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


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
CodeArray = npt.NDArray[np.int8]

_OK, _FUTURE, _TOO_OLD, _MISSING_VALUE, _NAN, _INFINITE, _OUT_OF_RANGE = range(7)
"""A sample's verdict in `_validate_columns`: the first rule it fails, in the per-sample checking order."""


def _fail(codes: CodeArray, mask: BoolArray, code: int) -> None:
    """Mark the samples of `mask` that have not failed an earlier rule."""
    codes[mask & (codes == _OK)] = code


def _fmt(limit: float | None) -> str:
    return "-inf" if limit is None else f"{limit:g}"


def _count(record_type: str, record: dict[str, Any]) -> int:
    """`topics.sample_count` for a record that may lack its samples array (it failed the required fields)."""
    field_name = samples_field_of(record_type)
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
