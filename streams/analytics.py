"""The analytics stage: validated batches in; window aggregates, alerts, KPIs and late dead letters out.

Two kinds of state, both plain dicts so the faust shell keeps them in changelog-backed tables and a worker
killed with SIGKILL resumes exactly where the changelog left off:

- per (key, channel): dedup memory, open windows and alert episodes (`ChannelStage`). They change together,
  and are stored as one table value, so a crash can never persist one without the others. The dedup memory
  doubles as the replay guard: samples re-delivered after a restart (at-least-once) are duplicates and do not
  count twice in windows or alerts.
- per key (vehicle or dyno station): KPI accumulators of the current period, active alerts, DTC episodes,
  distance and idle time, network statistics, dyno runs and custom metrics (`KeyStage`).

Everything is event-time: periods and windows close when the key's watermark (greatest event time minus the
allowed lateness) passes their end, or when the shell flushes a key that has gone idle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fleetstream.config import StreamsSettings
from fleetstream.schemas.codec import Codec
from fleetstream.schemas.deadletter import dead_letter
from fleetstream.schemas.sample_batch import SAMPLE_BATCH_TYPES, SampleBatch
from fleetstream.schemas.units import is_unknown_unit
from fleetstream.streams.alerts import AlertRule, DtcAlerts, DtcAlertSettings, ThresholdAlerts
from fleetstream.streams.custom_metrics import MetricDefinition, MetricsAggregator
from fleetstream.streams.dedup import ChannelDedup
from fleetstream.streams.kpis import (
    DynoRunTracker,
    HealthInputs,
    LocationTotals,
    VehicleKpis,
    alert_stats,
    health_score,
    out_of_range_count,
    run_records,
    uptime_pct,
    vehicle_records,
)
from fleetstream.streams.windows import ChannelWindows, WindowSpec
from fleetstream.topics import UnknownTopic, dead_letter_topic, record_type_of, samples_field_of
from fleetstream.topics import topic as topic_model

__all__ = ["AnalyticsConfig", "Analyzer", "ChannelStage", "KeyStage", "StageOutput", "encode_outputs"]

_NO_TIME_MS = -(2**62)


@dataclass(frozen=True)
class AnalyticsConfig:
    """The parsed, validated streams settings (built once at worker start)."""

    settings: StreamsSettings
    specs: tuple[WindowSpec, ...]
    rules: tuple[AlertRule, ...]
    dtc: DtcAlertSettings
    metrics: tuple[MetricDefinition, ...]

    @classmethod
    def from_settings(cls, settings: StreamsSettings) -> AnalyticsConfig:
        try:
            return cls(
                settings=settings,
                specs=(WindowSpec("tumbling", settings.tumbling_ms, settings.tumbling_ms),
                       WindowSpec("hopping", settings.hopping_size_ms, settings.hopping_advance_ms)),
                rules=tuple(AlertRule.model_validate(rule) for rule in settings.alert_rules),
                dtc=DtcAlertSettings.model_validate(settings.dtc),
                metrics=tuple(MetricDefinition.model_validate(metric) for metric in settings.metrics),
            )
        except Exception as exc:
            raise ValueError(f"invalid streams settings (alert_rules, dtc, metrics): {exc}") from exc


@dataclass
class StageOutput:
    windows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    kpis: list[dict[str, Any]] = field(default_factory=list)
    late_indices: list[int] = field(default_factory=list)
    duplicates: int = 0

    def extend(self, other: StageOutput) -> None:
        self.windows += other.windows
        self.alerts += other.alerts
        self.kpis += other.kpis
        self.duplicates += other.duplicates


class ChannelStage:
    """Dedup → windows → threshold alerts for one (key, channel)."""

    def __init__(self, config: AnalyticsConfig, key: str, channel: str, unit: str, source_topic: str,
                 state: Mapping[str, Any] | None = None):
        self.config = config
        # A rule's threshold is in the channel's real unit: values of unknown unit (published as the source had
        # them, schemas.units.unknown_unit) are never judged by it.
        rules = () if is_unknown_unit(unit) else config.rules
        if state is None:
            self.dedup = ChannelDedup(config.settings.dedup_horizon_ms)
            self.windows = ChannelWindows(key, channel, unit, source_topic, config.specs,
                                          config.settings.allowed_lateness_ms)
            self.alerts = ThresholdAlerts(key, channel, rules)
            self.last_seen_wall_s = 0.0
        else:
            self.dedup = ChannelDedup.from_dict(state["dedup"])
            self.windows = ChannelWindows.from_dict(state["windows"])
            self.alerts = ThresholdAlerts.from_dict(state["alerts"], rules)
            self.last_seen_wall_s = float(state.get("last_seen_wall_s", 0.0))

    def process(self, timestamps_ms: np.ndarray, values: np.ndarray, wall_s: float) -> tuple[StageOutput, np.ndarray]:
        """Returns the outputs and the mask of samples that were new (not duplicates)."""
        self.last_seen_wall_s = wall_s
        result = self.dedup.process(timestamps_ms)
        kept = result.keep
        out = StageOutput(duplicates=result.duplicates)
        window_out = self.windows.process(timestamps_ms[kept], values[kept])
        out.windows = window_out.aggregates
        kept_positions = np.flatnonzero(kept)
        out.late_indices = [int(kept_positions[i]) for i in window_out.late_indices]
        out.alerts = self.alerts.process(timestamps_ms[kept], values[kept]).alerts
        return out, kept

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window (the channel went idle: end of a run, a file, a drive)."""
        if self.windows.watermark_ms <= _NO_TIME_MS:
            return []
        horizon = max(spec.size_ms for spec in self.config.specs) + self.config.settings.allowed_lateness_ms
        return self.windows.flush(self.windows.watermark_ms + horizon)

    def to_dict(self) -> dict[str, Any]:
        return {"dedup": self.dedup.to_dict(), "windows": self.windows.to_dict(), "alerts": self.alerts.to_dict(),
                "last_seen_wall_s": self.last_seen_wall_s}


class KeyStage:
    """KPIs, DTC alerts, dyno runs and custom metrics of one key (vehicle or dyno station), period by period."""

    def __init__(self, config: AnalyticsConfig, key: str, state: Mapping[str, Any] | None = None):
        self.config = config
        self.key = key
        s = dict(state or {})
        self.fleet_id: str = s.get("fleet_id", "")
        self.period_start_ms: int | None = s.get("period_start_ms")
        self.max_event_ms: int = s.get("max_event_ms", _NO_TIME_MS)
        self.samples_total: int = s.get("samples_total", 0)
        self.samples_flagged: int = s.get("samples_flagged", 0)
        self.last_data_ms: int | None = s.get("last_data_ms")
        self.seconds_seen: list[int] = s.get("seconds_seen", [])
        self.active_alerts: dict[str, str] = s.get("active_alerts", {})
        self.period_alerts: list[dict[str, Any]] = s.get("period_alerts", [])
        self.acks_ms: dict[str, int] = s.get("acks_ms", {})
        """alert_id → earliest acknowledgement by a person (alert.acknowledged), for time to acknowledge."""
        self.net_matched: int = s.get("net_matched", 0)
        self.net_total: int = s.get("net_total", 0)
        self.travel = LocationTotals.from_dict(s["locations"]) if "locations" in s else LocationTotals()
        self.saw_locations: bool = s.get("saw_locations", False)
        self.dtcs = DtcAlerts.from_dict(s["dtcs"], config.dtc) if "dtcs" in s else DtcAlerts(key, config.dtc)
        self.dyno = DynoRunTracker.from_dict(s["dyno"]) if "dyno" in s else DynoRunTracker(key)
        self.metrics = (MetricsAggregator.from_dict(s["metrics"], config.metrics) if "metrics" in s
                        else MetricsAggregator(config.metrics, config.settings.allowed_lateness_ms))
        self.last_seen_wall_s: float = s.get("last_seen_wall_s", 0.0)

    # --- inputs --------------------------------------------------------------------------------------

    def samples(self, record: Mapping[str, Any], channel: str, timestamps_ms: np.ndarray, values: np.ndarray,
                flags: np.ndarray, now_ms: int, wall_s: float, dyno: bool) -> StageOutput:
        """Account a batch of new (deduplicated) samples of one channel."""
        self.fleet_id = str(record.get("fleet_id") or self.fleet_id)
        out = self._advance(timestamps_ms, now_ms, wall_s)
        self.samples_total += int(timestamps_ms.size)
        self.samples_flagged += out_of_range_count(flags)
        if timestamps_ms.size:
            self.last_data_ms = max(self.last_data_ms or _NO_TIME_MS, int(timestamps_ms.max()))
            self.seconds_seen = sorted(set(self.seconds_seen) | set((timestamps_ms // 1000).tolist()))
        if dyno and not is_unknown_unit(str(record.get("unit", ""))):  # run KPIs are in hp, rpm, AFR: never a guess
            run_id = str(record.get("run_id") or "")
            for summary in self.dyno.process(channel, timestamps_ms, values):
                out.kpis += run_records(summary, self.key, run_id, now_ms)
        context = {**{k: v for k, v in record.items() if not isinstance(v, list | dict)}, "channel": channel}
        out.kpis += self.metrics.process(context, timestamps_ms, values, now_ms).records
        return out

    def alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Threshold alerts of this key's channels: track the active ones and the period's episodes."""
        for alert in alerts:
            if alert["event"] == "fired":
                self.active_alerts[alert["alert_id"]] = alert["severity"]
            else:
                self.active_alerts.pop(alert["alert_id"], None)
            self.period_alerts.append(dict(alert))

    def acknowledgement(self, ack: Mapping[str, Any]) -> None:
        """An alert acknowledged by a person (written by `fleetstream serve`): the earliest one counts."""
        alert_id, acked_ms = str(ack["alert_id"]), int(ack["acked_ms"])
        self.acks_ms[alert_id] = min(acked_ms, self.acks_ms.get(alert_id, acked_ms))

    def dtc_batch(self, dtcs: Sequence[Mapping[str, Any]], now_ms: int, wall_s: float) -> StageOutput:
        out = self._advance(np.array([int(d["timestamp_ms"]) for d in dtcs], dtype=np.int64), now_ms, wall_s)
        out.alerts = self.dtcs.process(dtcs)
        self.period_alerts += out.alerts
        return out

    def locations(self, points: Sequence[Mapping[str, Any]], now_ms: int, wall_s: float) -> StageOutput:
        """GPS fixes or fleet locations: distance and idle time (GPS speed is taken as mph)."""
        out = self._advance(np.array([int(p["timestamp_ms"]) for p in points], dtype=np.int64), now_ms, wall_s)
        usable = [{"timestamp_ms": p["timestamp_ms"], "latitude": p["latitude"], "longitude": p["longitude"],
                   "engine_state": p.get("engine_state"), "speed_mph": p.get("speed_mph", p.get("speed"))}
                  for p in points if p.get("latitude") is not None and p.get("longitude") is not None]
        self.travel.add(usable)
        self.saw_locations = self.saw_locations or bool(usable)
        return out

    def network_stats(self, record: Mapping[str, Any], now_ms: int, wall_s: float) -> StageOutput:
        self.fleet_id = str(record.get("fleet_id") or self.fleet_id)
        out = self._advance(np.array([int(record["timestamp_ms"])], dtype=np.int64), now_ms, wall_s)
        self.net_matched += int(record["matched_messages"])
        self.net_total += int(record["total_messages"])
        return out

    # --- periods ---------------------------------------------------------------------------------------

    def _advance(self, timestamps_ms: np.ndarray, now_ms: int, wall_s: float) -> StageOutput:
        """Close every period the watermark has passed, before the new data is accounted."""
        self.last_seen_wall_s = wall_s
        out = StageOutput()
        if timestamps_ms.size == 0:
            return out
        period = self.config.settings.kpi_period_ms
        if self.period_start_ms is None:
            self.period_start_ms = int(timestamps_ms.min()) // period * period
        self.max_event_ms = max(self.max_event_ms, int(timestamps_ms.max()))
        watermark = self.max_event_ms - self.config.settings.allowed_lateness_ms
        if self.period_start_ms + period <= watermark:
            out.kpis += self._close_period(now_ms)
            # Periods without data between the closed one and the watermark have nothing to report: skip them
            # (a device whose clock jumps years must not emit a record for every period in between).
            self.period_start_ms = max(self.period_start_ms, watermark // period * period)
        return out

    def flush(self, now_ms: int) -> StageOutput:
        """The key went idle: close the current period and any run in progress, resolve silent DTCs."""
        out = StageOutput()
        if self.period_start_ms is not None and (self.samples_total + self.net_total + len(self.period_alerts) > 0
                                                 or self.saw_locations):
            out.kpis += self._close_period(now_ms)
        for summary in self.dyno.flush():
            out.kpis += run_records(summary, self.key, "", now_ms)
        out.kpis += self.metrics.flush(self.max_event_ms + self.config.settings.kpi_period_ms, now_ms)
        if self.max_event_ms > _NO_TIME_MS:
            out.alerts = self.dtcs.sweep(self.max_event_ms)
        return out

    def _close_period(self, now_ms: int) -> list[dict[str, Any]]:
        assert self.period_start_ms is not None
        start, end = self.period_start_ms, self.period_start_ms + self.config.settings.kpi_period_ms
        severities = list(self.active_alerts.values())
        health = health_score(HealthInputs(
            period_end_ms=end, active_critical_alerts=severities.count("critical"),
            active_warning_alerts=severities.count("warning"), active_dtcs=len(self.dtcs.active_dtcs()),
            samples_total=self.samples_total, samples_out_of_range=self.samples_flagged,
            last_data_ms=self.last_data_ms))
        seen_ms = [s * 1000 for s in self.seconds_seen if start <= s * 1000 < end]
        kpis = VehicleKpis(
            vehicle_id=self.key, health_score=health,
            uptime_pct=uptime_pct(seen_ms, start, end) if seen_ms else None,
            alerts=alert_stats(self.period_alerts, self.acks_ms, start, end),
            network_matched=self.net_matched, network_total=self.net_total,
            distance_mi=self.travel.distance_mi if self.saw_locations else None,
            idle_time_s=self.travel.idle_ms / 1000 if self.saw_locations else None)
        records = vehicle_records(kpis, start, end, now_ms)
        for record in records:
            record["dimensions"]["fleet_id"] = self.fleet_id
        # The next period starts empty, but ongoing alert episodes stay active and the last location is kept.
        self.period_start_ms = end
        self.samples_total = self.samples_flagged = self.net_matched = self.net_total = 0
        self.seconds_seen = [s for s in self.seconds_seen if s * 1000 >= end]
        self.period_alerts = [a for a in self.period_alerts if a["event"] == "fired" and a["alert_id"] in
                              self.active_alerts]
        self.acks_ms = {a: t for a, t in self.acks_ms.items() if a in self.active_alerts}  # later acks of ongoing ones
        self.travel.reset_totals()
        self.saw_locations = False
        return records

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet_id": self.fleet_id, "period_start_ms": self.period_start_ms, "max_event_ms": self.max_event_ms,
            "samples_total": self.samples_total, "samples_flagged": self.samples_flagged,
            "last_data_ms": self.last_data_ms, "seconds_seen": self.seconds_seen,
            "active_alerts": self.active_alerts, "period_alerts": self.period_alerts, "acks_ms": self.acks_ms,
            "net_matched": self.net_matched, "net_total": self.net_total,
            "locations": self.travel.to_dict(), "saw_locations": self.saw_locations,
            "dtcs": self.dtcs.to_dict(), "dyno": self.dyno.to_dict(), "metrics": self.metrics.to_dict(),
            "last_seen_wall_s": self.last_seen_wall_s,
        }


# --- dispatch -------------------------------------------------------------------------------------------------

Output = tuple[str, bytes | None, bytes]
State = MutableMapping[str, Any]

ACKS_TOPIC = "alert.acknowledged"
"""Acknowledgements by people, keyed by vehicle like the validated topics (the read API publishes them)."""
_CHANNEL_FIELD = {"signal_batch": "name", "dyno_sample_batch": "channel"}
"""The batch-level field that names the channel of a sample batch, per record type in `SAMPLE_BATCH_TYPES`."""


@functools.cache
def _valid_record_type(topic: str) -> str | None:
    """The record type of a validated topic (asked of the topic model); None for any other topic."""
    try:
        model = topic_model(topic)
    except UnknownTopic:
        return None
    return model.record_type if model.kind == "valid" else None


@dataclass
class Live:
    """A stage kept as an object between the messages of one batch, and written as a state dict once, at its end.

    Decoding a channel's state and encoding it again costs as much as its buffered samples (minutes of them),
    far more than the 100-odd samples a message adds: per message, that was most of the worker's time.
    """

    stage: ChannelStage | KeyStage
    partition: int
    applied: dict[str, int] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return _state(self.stage, self.partition, self.applied)


def _state(stage: ChannelStage | KeyStage, partition: int, applied: Mapping[str, int]) -> dict[str, Any]:
    """A stage as its table value: its own fields, its partition and the input offsets it has applied."""
    return {**stage.to_dict(), "_partition": partition, "_applied": dict(applied)}


def applied_offsets(state: Any) -> dict[str, int]:
    """Per input topic, the next offset a state has not applied yet (a state value or a `Live` stage).

    A batch's states are written one by one after its outputs, and its input offsets after them, so a crash can
    leave some states with the batch applied and its offsets not durable: the replay must skip, per state, the
    messages that state has applied already (counting a network statistic or a location step twice otherwise).
    """
    if state is None:
        return {}
    if isinstance(state, Live):
        return state.applied
    return dict(state.get("_applied") or {})


def settle(states: MutableMapping[str, Any]) -> None:
    """Replace the `Live` values of a batch's state changes by their state dicts."""
    for state_key, value in states.items():
        if isinstance(value, Live):
            states[state_key] = value.to_state()


class Analyzer:
    """Routes one validated record to its stages and encodes what they emit.

    `channels` and `keys` are the two state stores: plain dicts in tests, faust Tables in the worker. Each
    value also remembers its partition, so the idle-flush timer can write the changelog of a key it visits
    outside of stream processing. With `live`, stages are kept as `Live` objects in the stores (the caller
    `settle`s them at the end of the batch); a stage that raised is then half-updated, so the caller must
    drop the whole batch's changes.
    """

    def __init__(self, config: AnalyticsConfig, codec: Codec | None = None):
        self.config = config
        self.codec = codec or Codec()
        """The process's serializer: it decodes the inputs and encodes every output."""
        self.late_samples = 0
        self.duplicates = 0

    def decode(self, topic: str, value: bytes) -> dict[str, Any] | SampleBatch:
        """A validated message as `process` takes it: signal and dyno batches straight into columns."""
        if _valid_record_type(topic) in SAMPLE_BATCH_TYPES:
            return self.codec.decode_batch(value, record_type_of(topic))
        return self.codec.decode(value, record_type_of(topic))

    def process(self, topic: str, partition: int, offset: int, key: bytes | None,
                record: dict[str, Any] | SampleBatch, now_ms: int, wall_s: float, channels: State, keys: State,
                live: bool = False) -> list[Output]:
        record_key = (key or b"").decode() or str(record.get("vehicle_id") or record.get("station_id") or "")
        key_state = keys.get(record_key)
        key_applied = applied_offsets(key_state)
        key_done = offset < key_applied.get(topic, 0)  # applied before a crash; its outputs were delivered then
        stage = key_state.stage if isinstance(key_state, Live) else KeyStage(self.config, record_key, key_state)
        assert isinstance(stage, KeyStage)
        out = StageOutput()
        outputs: list[Output] = []
        record_type = _valid_record_type(topic)
        if record_type in SAMPLE_BATCH_TYPES:
            batch = record if isinstance(record, SampleBatch) else \
                SampleBatch.from_record(record_type_of(topic), record)
            outputs += self._samples(topic, partition, offset, key, batch, record_key, stage, out, now_ms, wall_s,
                                     channels, live, key_done)
        elif isinstance(record, SampleBatch):
            raise TypeError(f"a sample batch on {topic}, which carries {record_type_of(topic)} records")
        elif key_done:
            return []
        elif record_type == "dtc_batch":
            out.extend(stage.dtc_batch(record["dtcs"], now_ms, wall_s))
        elif record_type in ("gps_batch", "fleet_location_batch"):
            out.extend(stage.locations(record[str(samples_field_of(record_type))], now_ms, wall_s))
        elif record_type == "network_stats":
            out.extend(stage.network_stats(record, now_ms, wall_s))
        elif topic == ACKS_TOPIC:
            stage.acknowledgement(record)
        if not key_done:
            key_applied[topic] = offset + 1
            keys[record_key] = Live(stage, partition, key_applied) if live else _state(stage, partition, key_applied)
        return outputs + encode_outputs(out, record_key, self.codec)

    def _samples(self, topic: str, partition: int, offset: int, key: bytes | None, record: SampleBatch,
                 record_key: str, stage: KeyStage, out: StageOutput, now_ms: int, wall_s: float,
                 channels: State, live: bool, key_done: bool = False) -> list[Output]:
        channel = str(record[_CHANNEL_FIELD[record.record_type]])
        numeric = record if record.has_value.all() else record.take(record.has_value)
        ts, values, flags = numeric.timestamp_ms, numeric.value, numeric.flags
        channel_key = f"{record_key}\x1f{channel}"
        channel_state = channels.get(channel_key)
        channel_applied = applied_offsets(channel_state)
        if offset < channel_applied.get(topic, 0):
            # Applied before a crash, and so was the key's part: channel states are written after key states.
            return []
        channel_stage = channel_state.stage if isinstance(channel_state, Live) else \
            ChannelStage(self.config, record_key, channel, str(record["unit"]), topic, channel_state)
        assert isinstance(channel_stage, ChannelStage)
        result, kept = channel_stage.process(ts, values, wall_s)
        channel_applied[topic] = offset + 1
        channels[channel_key] = Live(channel_stage, partition, channel_applied) if live else \
            _state(channel_stage, partition, channel_applied)
        self.duplicates += result.duplicates
        out.extend(result)
        if not key_done:  # else the key's state has these samples and alerts already (a replay after a crash)
            stage.alerts(result.alerts)
            # Late samples are dead-lettered: like duplicates, they count nowhere else (not in the KPIs either).
            accepted = kept.copy()
            accepted[result.late_indices] = False
            new = np.flatnonzero(accepted)
            out.extend(stage.samples(record.fields, channel, ts[new], values[new], flags[new], now_ms, wall_s,
                                     dyno=topic == "dyno.samples.valid"))
        if not result.late_indices:
            return []
        self.late_samples += len(result.late_indices)
        late = numeric.take(np.asarray(result.late_indices, np.int64))
        _, _, letter = dead_letter(source_topic=topic, partition=partition, offset=offset, key=key,
                                   original=self.codec.encode_batch(late, topic), stage="window",
                                   error_code="late", reason=f"{len(late)} samples arrived after every window "
                                   f"containing them had closed (allowed lateness "
                                   f"{self.config.settings.allowed_lateness_ms} ms)",
                                   sample_count=len(late), now_ms=now_ms, codec=self.codec)
        return [(dead_letter_topic(topic), key, letter)]

    def flush_idle(self, channels: State, keys: State, now_ms: int, wall_s: float, active_since_s: float = 0.0,
                   ready: Callable[[int], bool] | None = None
                   ) -> tuple[list[Output], list[tuple[State, str, dict[str, Any]]]]:
        """Close windows, periods and runs of channels and keys idle for `idle_flush_s` (wall clock).

        Idleness counts from `active_since_s` at the earliest: the time this worker started processing. State
        recovered from a changelog carries the wall time its key was last seen by a worker that may have been
        down for minutes, while the key's records waited in the input topics; flushing it before the backlog
        is read would close its windows early and dead-letter the backlog as late.

        `ready(partition)` says whether the caller may flush the keys of a partition (in the worker: it owns
        the partition in every input topic and has read each to its end; states of partitions it does not own,
        standby replicas, are never flushed).

        Returns the outputs and the state updates (store, key, value) for the caller to write.
        """
        idle_s = self.config.settings.idle_flush_s

        def idle(state: Mapping[str, Any]) -> bool:
            last_seen_s = max(float(state.get("last_seen_wall_s", wall_s)), active_since_s)
            return not state.get("flushed") and wall_s - last_seen_s >= idle_s and \
                (ready is None or ready(int(state["_partition"])))

        outputs: list[Output] = []
        updates: list[tuple[State, str, dict[str, Any]]] = []
        for channel_key, state in list(channels.items()):
            if not idle(state):
                continue
            key, channel = channel_key.split("\x1f", 1)
            stage = ChannelStage(self.config, key, channel, "", "", state)
            outputs += encode_outputs(StageOutput(windows=stage.flush()), key, self.codec)
            updates.append((channels, channel_key, {**_state(stage, state["_partition"], applied_offsets(state)),
                                                    "flushed": True}))
        for key_name, state in list(keys.items()):
            if not idle(state):
                continue
            key_stage = KeyStage(self.config, key_name, state)
            outputs += encode_outputs(key_stage.flush(now_ms), key_name, self.codec)
            updates.append((keys, key_name, {**_state(key_stage, state["_partition"], applied_offsets(state)),
                                              "flushed": True}))
        return outputs, updates


def encode_outputs(out: StageOutput, key: str, codec: Codec | None = None) -> list[Output]:
    """Windows, alerts (fired ones also on alert.created) and KPIs as encoded messages keyed by `key`."""
    codec = codec or Codec()
    key_bytes = key.encode()
    encoded: list[Output] = [("telemetry.windows", key_bytes, codec.encode("window_aggregate", w, "telemetry.windows"))
                             for w in out.windows]
    for alert in out.alerts:
        # one value on both topics: with a registry, the subject is the alert topic's (same schema either way)
        value = codec.encode("alert", alert, "analytics.threshold.exceeded")
        encoded.append(("analytics.threshold.exceeded", key_bytes, value))
        if alert["event"] == "fired":
            encoded.append(("alert.created", key_bytes, value))
    encoded += [("analytics.kpi", key_bytes, codec.encode("kpi", k, "analytics.kpi")) for k in out.kpis]
    return encoded
