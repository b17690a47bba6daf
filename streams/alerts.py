"""Alert state machines: threshold rules on channel values and DTC episodes, one alert per episode.

Both machines run in event time per key and keep their state as plain data, so the shell can hold it in a
Faust table keyed by (key, channel) (threshold rules of that channel) or by key (DTCs). An *episode* produces
exactly one ``fired`` and at most one ``resolved`` event, sharing a deterministic ``alert_id``, so a replay
after a restart produces the same ids and the sinks can upsert. Outputs are alert/v1 dicts.

Threshold rules (`AlertRule`): each comparator has a fire predicate and a clear predicate; hysteresis moves
only the clear side, so a value hovering at the threshold cannot storm:

====  ==================  =============================
op    fires while         clears when
====  ==================  =============================
>     v > t               v <= t - h
>=    v >= t              v < t - h
<     v < t               v >= t + h
<=    v <= t              v > t + h
==    v == t              abs(v - t) > h
!=    v != t              v == t  (hysteresis unused)
====  ==================  =============================

``idle`` → (fire predicate true at t0) → ``pending`` since t0 → (still true at a sample with
t - t0 >= for_duration_ms) → ``fired`` (started_ms = t0) → ``active`` → (clear predicate true at t1) →
``resolved`` (ended_ms = t1) → ``idle``; the next episode can start only after t1, which keeps alert ids
unique even when samples share a timestamp. A false fire predicate while pending returns to idle without an
event. A batch is evaluated in event-time order (stable sort); a sample older than the last one the rule
evaluated for this key is skipped (counted), because the episode has already moved past it.

DTC episodes (`DtcAlerts`): a DTC is *failing* when its status byte (hex, ISO 14229-1) has a bit of
``failing_mask`` set, by default bit 0 ``testFailed``. The first failing report of a (key, dtc_id) fires;
the episode resolves on a report of that DTC with the mask bits clear (the ECU says the test passes again),
or when no failing report came for ``silence_ms`` of event time (checked on each batch and by `sweep`).
A status that does not parse as hex counts as failing (a DTC was reported; better one alert too many).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AlertRule", "DtcAlertSettings", "DtcAlerts", "ThresholdAlerts", "ThresholdOutput"]

Comparator = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["info", "warning", "critical"]

_FIRE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}


def _clears(comparator: str, value: float, threshold: float, hysteresis: float) -> bool:
    if comparator == ">":
        return value <= threshold - hysteresis
    if comparator == ">=":
        return value < threshold - hysteresis
    if comparator == "<":
        return value >= threshold + hysteresis
    if comparator == "<=":
        return value > threshold + hysteresis
    if comparator == "==":
        return abs(value - threshold) > hysteresis
    return value == threshold


class AlertRule(BaseModel):
    """A threshold rule from config: fire when ``channel comparator threshold`` holds for ``for_duration_ms``."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str = Field(min_length=1)
    channel: str = Field(min_length=1)
    comparator: Comparator
    threshold: float
    for_duration_ms: int = Field(default=0, ge=0)
    hysteresis: float = Field(default=0.0, ge=0.0)
    severity: Severity = "warning"
    message: str = ""

    def fires(self, value: float) -> bool:
        return _FIRE[self.comparator](value, self.threshold)

    def clears(self, value: float) -> bool:
        return _clears(self.comparator, value, self.threshold, self.hysteresis)


@dataclass
class _RuleState:
    phase: Literal["idle", "pending", "active"] = "idle"
    since_ms: int = 0
    last_evaluated_ms: int | None = None
    last_resolved_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "since_ms": self.since_ms, "last_evaluated_ms": self.last_evaluated_ms,
                "last_resolved_ms": self.last_resolved_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _RuleState:
        return cls(phase=data["phase"], since_ms=int(data["since_ms"]), last_evaluated_ms=data["last_evaluated_ms"],
                   last_resolved_ms=data["last_resolved_ms"])


@dataclass
class ThresholdOutput:
    alerts: list[dict[str, Any]] = field(default_factory=list)
    skipped_out_of_order: int = 0


class ThresholdAlerts:
    """The threshold rules of one (key, channel) and their episode state."""

    def __init__(self, key: str, channel: str, rules: Iterable[AlertRule]) -> None:
        self.key = key
        self.channel = channel
        self.rules = [rule for rule in rules if rule.channel == channel]
        self._states: dict[str, _RuleState] = {rule.rule_id: _RuleState() for rule in self.rules}

    def process(self, timestamps_ms: npt.ArrayLike, values: npt.ArrayLike) -> ThresholdOutput:
        """Evaluate every rule over a batch of samples of this channel, in event-time order."""
        ts = np.asarray(timestamps_ms, dtype=np.int64).reshape(-1)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if ts.shape != vals.shape:
            raise ValueError(f"{ts.size} timestamps but {vals.size} values")
        output = ThresholdOutput()
        if not self.rules or ts.size == 0:
            return output
        order = np.argsort(ts, kind="stable")
        ordered_ts: list[int] = ts[order].tolist()
        ordered_values: list[float] = vals[order].tolist()
        emitted: list[tuple[int, dict[str, Any]]] = []
        for rule in self.rules:
            state = self._states[rule.rule_id]
            output.skipped_out_of_order += self._evaluate(rule, state, ordered_ts, ordered_values, emitted)
        emitted.sort(key=lambda item: item[0])  # stable: one rule's events keep their order
        output.alerts = [alert for _, alert in emitted]
        return output

    def active_alert_ids(self) -> list[str]:
        return [self._alert_id(rule, self._states[rule.rule_id].since_ms)
                for rule in self.rules if self._states[rule.rule_id].phase == "active"]

    def _evaluate(self, rule: AlertRule, state: _RuleState, ts: Sequence[int], values: Sequence[float],
                  emitted: list[tuple[int, dict[str, Any]]]) -> int:
        """Run one rule's machine over time-ordered samples; append (emission time, alert); return skipped."""
        skipped = 0
        for time_ms, value in zip(ts, values, strict=True):
            if state.last_evaluated_ms is not None and time_ms < state.last_evaluated_ms:
                skipped += 1
                continue
            state.last_evaluated_ms = time_ms
            if state.phase == "active":
                if rule.clears(value):
                    emitted.append((time_ms, self._alert(rule, "resolved", state.since_ms, value, ended_ms=time_ms)))
                    state.phase, state.last_resolved_ms = "idle", time_ms
                continue
            # A new episode starts strictly after the last one ended, so its alert_id is new.
            if not rule.fires(value) or (state.phase == "idle" and time_ms == state.last_resolved_ms):
                state.phase = "idle"
                continue
            if state.phase == "idle":
                state.phase, state.since_ms = "pending", time_ms
            if time_ms - state.since_ms >= rule.for_duration_ms:
                emitted.append((time_ms, self._alert(rule, "fired", state.since_ms, value, ended_ms=None)))
                state.phase = "active"
        return skipped

    def _alert_id(self, rule: AlertRule, started_ms: int) -> str:
        return f"{rule.rule_id}:{self.key}:{started_ms}"

    def _alert(self, rule: AlertRule, event: str, started_ms: int, value: float,
               ended_ms: int | None) -> dict[str, Any]:
        return {
            "alert_id": self._alert_id(rule, started_ms),
            "event": event,
            "kind": "threshold",
            "rule_id": rule.rule_id,
            "key": self.key,
            "channel": self.channel,
            "severity": rule.severity,
            "comparator": rule.comparator,
            "threshold": rule.threshold,
            "value": value,
            "started_ms": started_ms,
            "ended_ms": ended_ms,
            "message": rule.message or f"{self.channel} {rule.comparator} {rule.threshold:g}"
                                       f" for {rule.for_duration_ms} ms (value {value:g})",
        }

    def to_dict(self) -> dict[str, Any]:
        """Episode state per rule id (the rules themselves come from config, not from the state)."""
        return {"key": self.key, "channel": self.channel,
                "rules": {rule_id: state.to_dict() for rule_id, state in self._states.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], rules: Iterable[AlertRule]) -> ThresholdAlerts:
        """Restore the state; rules added to the config since start idle, removed ones are dropped."""
        alerts = cls(key=data["key"], channel=data["channel"], rules=rules)
        for rule_id, state in data["rules"].items():
            if rule_id in alerts._states:
                alerts._states[rule_id] = _RuleState.from_dict(state)
        return alerts


class DtcAlertSettings(BaseModel):
    """How DTC reports become alert episodes."""

    model_config = ConfigDict(extra="forbid")

    failing_mask: int = Field(default=0x01, ge=1, le=0xFF, description="Status bits meaning failing (bit 0 testFailed)")
    silence_ms: int = Field(default=3_600_000, gt=0, description="Resolve when no failing report for this long.")
    severity: Severity = "warning"
    severity_by_prefix: dict[str, Severity] = Field(
        default_factory=dict, description="DTC id prefix → severity, longest prefix wins, e.g. {'P03': 'critical'}.")

    def severity_of(self, dtc_id: str) -> Severity:
        matches = [prefix for prefix in self.severity_by_prefix if dtc_id.startswith(prefix)]
        return self.severity_by_prefix[max(matches, key=len)] if matches else self.severity


def _is_failing(status: str, failing_mask: int) -> bool:
    try:
        return bool(int(status, 16) & failing_mask)
    except ValueError:
        return True


class DtcAlerts:
    """DTC episodes of one key: dtc_id → (started_ms, last failing report ms, last evaluated ms)."""

    def __init__(self, key: str, settings: DtcAlertSettings | None = None) -> None:
        self.key = key
        self.settings = settings or DtcAlertSettings()
        self._active: dict[str, dict[str, Any]] = {}
        self._last_evaluated_ms: dict[str, int] = {}

    def process(self, dtcs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Evaluate a batch of Dtc records (dtc_id, status, description, timestamp_ms) in event-time order."""
        alerts: list[dict[str, Any]] = []
        for dtc in sorted(dtcs, key=lambda d: int(d["timestamp_ms"])):
            time_ms, dtc_id = int(dtc["timestamp_ms"]), str(dtc["dtc_id"])
            alerts.extend(self._resolve_silent(time_ms))
            if time_ms < self._last_evaluated_ms.get(dtc_id, time_ms):
                continue
            self._last_evaluated_ms[dtc_id] = time_ms
            failing = _is_failing(str(dtc["status"]), self.settings.failing_mask)
            episode = self._active.get(dtc_id)
            if failing and episode is None:
                self._active[dtc_id] = {"started_ms": time_ms, "last_failing_ms": time_ms,
                                        "description": str(dtc.get("description", ""))}
                alerts.append(self._alert(dtc_id, "fired", time_ms, None, dtc.get("status")))
            elif failing and episode is not None:
                episode["last_failing_ms"] = time_ms
            elif episode is not None:
                del self._active[dtc_id]
                alerts.append(self._alert(dtc_id, "resolved", episode["started_ms"], time_ms, dtc.get("status"),
                                          description=episode["description"]))
        return alerts

    def sweep(self, now_ms: int) -> list[dict[str, Any]]:
        """Resolve episodes silent for ``silence_ms`` at event time ``now_ms`` (a timer calls it for idle keys)."""
        return self._resolve_silent(now_ms)

    def active_dtcs(self) -> list[str]:
        return sorted(self._active)

    def _resolve_silent(self, now_ms: int) -> list[dict[str, Any]]:
        silent = [dtc_id for dtc_id, episode in self._active.items()
                  if now_ms - episode["last_failing_ms"] >= self.settings.silence_ms]
        alerts = []
        for dtc_id in sorted(silent):
            episode = self._active.pop(dtc_id)
            ended_ms = episode["last_failing_ms"] + self.settings.silence_ms
            alerts.append(self._alert(dtc_id, "resolved", episode["started_ms"], ended_ms, None,
                                      description=episode["description"]))
        return alerts

    def _alert(self, dtc_id: str, event: str, started_ms: int, ended_ms: int | None, status: Any,
               description: str = "") -> dict[str, Any]:
        episode = self._active.get(dtc_id)
        text = description or (episode["description"] if episode else "")
        detail = f"status {status}" if status is not None else f"no failing report for {self.settings.silence_ms} ms"
        return {
            "alert_id": f"dtc:{dtc_id}:{self.key}:{started_ms}",
            "event": event,
            "kind": "dtc",
            "rule_id": "dtc",
            "key": self.key,
            "channel": dtc_id,
            "severity": self.settings.severity_of(dtc_id),
            "comparator": "",
            "threshold": None,
            "value": None,
            "started_ms": started_ms,
            "ended_ms": ended_ms,
            "message": f"{dtc_id}: {text} ({detail})" if text else f"{dtc_id} ({detail})",
        }

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "active": {k: dict(v) for k, v in self._active.items()},
                "last_evaluated_ms": dict(self._last_evaluated_ms)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], settings: DtcAlertSettings | None = None) -> DtcAlerts:
        alerts = cls(key=data["key"], settings=settings)
        alerts._active = {k: dict(v) for k, v in data["active"].items()}
        alerts._last_evaluated_ms = {k: int(v) for k, v in data["last_evaluated_ms"].items()}
        return alerts
