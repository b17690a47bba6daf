"""Decoded Innovate packets grouped into `dyno_sample_batch` records, per sensor and aux channel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetstream.producers.innovate.protocol import SOURCE, VOLTS_PER_COUNT, Packet, SensorReading, SensorState
from fleetstream.schemas.units import UNKNOWN_UNIT, canonical_unit, to_canonical

__all__ = [
    "AuxChannel",
    "InnovateBatcher",
]


@dataclass(frozen=True, slots=True)
class AuxChannel:
    """How to turn an aux word into a value: `raw * scale + offset` in `unit`, then converted to canonical units.

    The default reads volts (0 = 0 V, 1023 = 5 V); an RPM converter is `AuxChannel("engine_speed", 10.0, unit="rpm")`.
    A scaling of its own without a unit is not volts: its values go out unchanged as unit `unknown`.
    """

    name: str
    scale: float = VOLTS_PER_COUNT
    offset: float = 0.0
    unit: str | None = None
    """Unit of `raw * scale + offset`; None: V for the default scaling, else unknown (never assumed)."""

    @property
    def declared_unit(self) -> str:
        if self.unit is not None:
            return self.unit
        return "V" if (self.scale, self.offset) == (VOLTS_PER_COUNT, 0.0) else UNKNOWN_UNIT

    def value(self, raw: int) -> float:
        return to_canonical(raw * self.scale + self.offset, self.declared_unit)[0]

    @property
    def canonical_unit(self) -> str:
        return canonical_unit(self.declared_unit)


@dataclass
class _Run:
    """Samples of one (provider, channel) collected since the last flush, all in state ok."""

    unit: str
    first_ms: int
    samples: list[dict[str, Any]] = field(default_factory=list)


class InnovateBatcher:
    """Stamped packets in, `dyno_sample_batch` records out (schemas/avro/dyno_sample_batch/v2.avsc).

    Sensors are providers `wideband1`, `wideband2`... in chain order with channels `afr` (AFR) and `lambda`;
    aux words are provider `aux` with channels named by `aux_channels` (default aux1..auxN in volts). Samples
    only exist in state ok; when a sensor enters another state (warming up, O2 %, calibrating, error:<code>...),
    one record per channel with that `sensor_state` and no samples is emitted at once, whose `batch_id`
    carries the time the state began. `batch_id` = innovate:<station>:<provider>:<channel>:<first ms>, so a
    replay of the same stream yields the same ids.
    """

    def __init__(self, station_id: str, *, run_id: str = "", aux_channels: Sequence[AuxChannel] = (),
                 max_samples_per_batch: int = 1000):
        self.station_id, self.run_id = station_id, run_id
        self.aux_channels = tuple(aux_channels)
        self.max_samples_per_batch = max_samples_per_batch
        self._runs: dict[tuple[str, str], _Run] = {}
        self._ready: list[dict[str, Any]] = []
        self._states: dict[str, str] = {}
        self.state_changes = 0

    @property
    def pending_samples(self) -> int:
        return sum(len(r.samples) for r in self._runs.values())

    def add(self, timestamp_ms: int, packet: Packet) -> None:
        for position, sensor in enumerate(packet.sensors, start=1):
            self._add_sensor(f"wideband{position}", sensor, timestamp_ms)
        for index, raw in enumerate(packet.aux):
            channel = self._aux_channel(index)
            self._append("aux", channel.name, channel.canonical_unit, timestamp_ms, channel.value(raw))

    def take(self) -> list[dict[str, Any]]:
        """Every record ready now: state changes and the samples collected so far."""
        for key in list(self._runs):
            self._close(key)
        ready, self._ready = self._ready, []
        return ready

    def _aux_channel(self, index: int) -> AuxChannel:
        if index < len(self.aux_channels):
            return self.aux_channels[index]
        return AuxChannel(f"aux{index + 1}")

    def _add_sensor(self, provider: str, sensor: SensorReading, timestamp_ms: int) -> None:
        label = sensor.state_label
        if self._states.get(provider) != label:
            self._states[provider] = label
            self.state_changes += 1
            for channel in ("afr", "lambda"):
                self._close((provider, channel))
                if label != SensorState.OK:
                    unit = "AFR" if channel == "afr" else "lambda"
                    self._ready.append(self._record(provider, channel, unit, timestamp_ms, label, []))
        lam, afr = sensor.lambda_value, sensor.afr
        if lam is not None:
            self._append(provider, "lambda", "lambda", timestamp_ms, lam)
        if afr is not None:
            self._append(provider, "afr", "AFR", timestamp_ms, afr)

    def _append(self, provider: str, channel: str, unit: str, timestamp_ms: int, value: float) -> None:
        key = (provider, channel)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(unit, timestamp_ms)
        run.samples.append({"timestamp_ms": timestamp_ms, "value": float(value), "flags": 0})
        if len(run.samples) >= self.max_samples_per_batch:
            self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        run = self._runs.pop(key, None)
        if run is not None and run.samples:
            self._ready.append(self._record(key[0], key[1], run.unit, run.first_ms, "ok", run.samples))

    def _record(self, provider: str, channel: str, unit: str, first_ms: int, state: str,
                samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "batch_id": f"{SOURCE}:{self.station_id}:{provider}:{channel}:{first_ms}",
            "source": SOURCE,
            "station_id": self.station_id,
            "provider": provider,
            "run_id": self.run_id,
            "channel": channel,
            "unit": unit,
            "sensor_state": state,
            "samples": samples,
        }
