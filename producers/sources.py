"""The source adapters an edge agent can run, by `type` in agent.yaml.

The interface between the agent and its sources is defined here (`Source`, `Emit`, `SourceSpec`), so the
adapters need nothing of the agent. Each builder turns a `SourceSpec` into a `Source`: a callable that runs
until `stop` is set and hands records to `emit` (which makes them durable). Keep adapters thin: decoding
lives in the source's own module.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleetstream.producers.spool import PRIORITIES

__all__ = ["SOURCE_TYPES", "CounterStream", "Emit", "Record", "Source", "SourceSpec", "build_source"]

Record = tuple[str, str, dict[str, Any]]
Emit = Callable[[Sequence[Record]], None]
Source = Callable[[Emit, threading.Event], None]
"""A source runs until `stop` is set, emitting records; raising means "failed, reconnect me"."""


class SourceSpec(BaseModel):
    """One source in agent.yaml: `type` picks the adapter, `options` are its settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: str
    priority: str = Field(default="normal", pattern="^(" + "|".join(PRIORITIES) + ")$")
    options: dict[str, Any] = Field(default_factory=dict)


def _vehicle_sim(spec: SourceSpec, station_id: str) -> Source:
    from fleetstream.producers.vehicle_sim import VehicleFleetSimulator

    options = dict(spec.options)
    tick_s = float(options.pop("tick_s", 0.5))
    simulator = VehicleFleetSimulator(**{"source": spec.name, **options})

    def run(emit: Emit, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            records = [(t, k, r) for t, k, r in simulator.tick(int(time.time() * 1000)) if isinstance(r, dict)]
            emit(records)
            stop.wait(max(0.0, tick_s - (time.monotonic() - started)))

    return run


class CounterStream:
    """Numbered samples, batched the way the dyno sources batch them: the ground truth for fault tests and benches.

    Sample `i` has value `i` and timestamp `epoch_ms + i * 1000 / rate_hz`, on channel `counter_<i % channels>`.
    Batch `k` holds samples `[k * batch_samples, (k + 1) * batch_samples)`, one `dyno_sample_batch` record per
    channel, with `batch_id` `counter:<station>:<epoch_ms>:<channel>:<k>`: the same batch always has the same
    bytes and id, so downstream dedup (and a test) can recognise a re-sent one, while another run (another
    epoch, by default its start time) never reuses an id for different samples.
    """

    def __init__(self, station_id: str, *, rate_hz: float = 100.0, batch_interval_s: float = 0.25,
                 channels: int = 1, epoch_ms: int = 0):
        if rate_hz <= 0 or batch_interval_s <= 0 or channels < 1:
            raise ValueError("counter: rate_hz and batch_interval_s must be positive and channels at least 1")
        self.station_id = station_id
        self.rate_hz = rate_hz
        self.batch_interval_s = batch_interval_s
        self.channels = channels
        self.batch_samples = max(1, round(rate_hz * batch_interval_s))
        self.epoch_ms = epoch_ms

    def batch(self, k: int) -> list[dict[str, Any]]:
        """The records of batch `k` (one per channel that has samples in it)."""
        first = k * self.batch_samples
        per_channel: dict[int, list[dict[str, Any]]] = {}
        for i in range(first, first + self.batch_samples):
            per_channel.setdefault(i % self.channels, []).append(
                {"timestamp_ms": self.epoch_ms + int(i * 1000 / self.rate_hz), "value": float(i), "flags": 0})
        return [{"batch_id": f"counter:{self.station_id}:{self.epoch_ms}:{channel}:{k}", "source": "counter",
                 "station_id": self.station_id, "provider": "counter", "run_id": "", "channel": f"counter_{channel}",
                 "unit": "count", "sensor_state": "ok", "samples": samples}
                for channel, samples in sorted(per_channel.items())]


def _counter(spec: SourceSpec, station_id: str) -> Source:
    """Numbered samples at a fixed rate (fault tests, `fleetstream bench edge`); see CounterStream.

    options: rate_hz, batch_interval_s, channels, epoch_ms (default: now), count (finish once this many samples
    are emitted, rounded up to whole batches; 0 = never),
    state_file: after each emit returns, `{"acked": <highest index the spool holds>, "epoch_ms": ...}` is
    written there atomically; a restarted source resumes after `acked` with the same epoch, so it re-creates
    exactly the batches a crash interrupted, never different ones.
    """
    options = dict(spec.options)
    count = int(options.pop("count", 0))
    state_file = options.pop("state_file", None)
    state_path = Path(state_file) if state_file else None
    state = json.loads(state_path.read_text()) if state_path is not None and state_path.exists() else {}
    configured_epoch_ms = options.pop("epoch_ms", None)
    epoch_ms = int(state.get("epoch_ms", configured_epoch_ms if configured_epoch_ms is not None
                             else time.time_ns() // 1_000_000))
    stream = CounterStream(station_id, epoch_ms=epoch_ms, **options)
    next_batch = [(int(state["acked"]) + 1) // stream.batch_samples if "acked" in state else 0]

    def record_acked(acked: int) -> None:
        assert state_path is not None
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"acked": acked, "epoch_ms": epoch_ms}))
        os.replace(tmp, state_path)

    def run(emit: Emit, stop: threading.Event) -> None:
        due = time.monotonic()
        while not stop.is_set():
            k = next_batch[0]
            if count and k * stream.batch_samples >= count:
                return
            due += stream.batch_interval_s
            stop.wait(max(0.0, due - time.monotonic()))
            emit([("dyno.samples", station_id, r) for r in stream.batch(k)])
            next_batch[0] = k + 1
            if state_path is not None:
                record_acked((k + 1) * stream.batch_samples - 1)

    return run


def _jetdrive(spec: SourceSpec, station_id: str) -> Source:
    """JetDrive multicast client; options: group, port, interface, run_id, batch_interval_s."""
    from fleetstream.producers.jetdrive import JetDriveClient

    client = JetDriveClient(station_id, **spec.options)

    def run(emit: Emit, stop: threading.Event) -> None:
        client.run(lambda records: emit([("dyno.samples", station_id, r) for r in records]), stop)

    return run


def _jetdrive_sim(spec: SourceSpec, station_id: str) -> Source:
    """A simulated dyno provider on the multicast group (for demos and tests); options as JetDriveSimulator."""
    from fleetstream.producers.jetdrive import JetDriveSimulator

    simulator = JetDriveSimulator(**spec.options)

    def run(emit: Emit, stop: threading.Event) -> None:
        simulator.run(stop)

    return run


class _PtyMaster:
    """The device end of a pseudo-terminal, for a simulator: the reader opens the slave like a real tty."""

    def __init__(self) -> None:
        self.fd, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device_path = os.ttyname(self._slave)

    @property
    def in_waiting(self) -> int:
        return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0]

    def read(self, size: int = 1) -> bytes:
        return os.read(self.fd, size) if size else b""

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._slave)


def _innovate(spec: SourceSpec, station_id: str) -> Source:
    """Innovate MTS over serial. options: url (any pyserial URL), aux ([{name, scale, offset, unit}]), run_id,
    batch_interval_s; `simulate: true` runs an MTS simulator behind a pseudo-terminal instead of a device."""
    from fleetstream.producers.innovate import AuxChannel, InnovateReader, InnovateSimulator

    options = dict(spec.options)
    simulate = bool(options.pop("simulate", False))
    seed = int(options.pop("seed", 0))
    aux = [AuxChannel(**a) for a in options.pop("aux", [])]
    device = _PtyMaster() if simulate else None
    url = device.device_path if device else options.pop("url")
    reader = InnovateReader(url, station_id, aux_channels=aux, **options)

    def run(emit: Emit, stop: threading.Event) -> None:
        if device is not None:
            simulator = InnovateSimulator(seed=seed, warmup_packets=20)
            threading.Thread(target=simulator.stream_to, args=(device, stop), name="mts-sim", daemon=True).start()
        reader.run(lambda records: emit([("dyno.samples", station_id, r) for r in records]), stop)

    return run


def _fleet_poller(spec: SourceSpec, station_id: str) -> Source:
    """A Motive or Samsara poller; options: provider, base_url, checkpoint_dir, lookback_s, interval_s, token_env."""
    from fleetstream.config import FleetSettings
    from fleetstream.producers.fleet import TOKEN_VARIABLES, build_poller

    options = dict(spec.options)
    provider = options.pop("provider", spec.type)
    token = os.environ.get(options.pop("token_env", TOKEN_VARIABLES[provider]), "")
    checkpoint_dir = Path(options.pop("checkpoint_dir", ".fleetstream/fleet-checkpoints"))
    fleet = FleetSettings(**{k: options.pop(k) for k in ("lookback_s", "interval_s") if k in options})
    emit_ref: list[Emit] = []
    poller = build_poller(provider, fleet, token, checkpoint_dir,
                          lambda batch: emit_ref[0]([(t, k.decode(), r) for t, k, r in batch]), **options)

    def run(emit: Emit, stop: threading.Event) -> None:
        emit_ref[:] = [emit]  # emit returns once the records are in the spool: durable, so checkpoints may move
        poller.run(stop)

    return run


SOURCE_TYPES: dict[str, Callable[[Any, str], Any]] = {
    "counter": _counter,
    "motive": _fleet_poller,
    "samsara": _fleet_poller,
    "innovate": _innovate,
    "vehicle_sim": _vehicle_sim,
    "jetdrive": _jetdrive,
    "jetdrive_sim": _jetdrive_sim,
}


def build_source(spec: SourceSpec, station_id: str) -> Source:
    try:
        builder = SOURCE_TYPES[spec.type]
    except KeyError:
        known = ", ".join(SOURCE_TYPES)
        raise ValueError(f"source {spec.name!r}: unknown type {spec.type!r}; known: {known}") from None
    source: Source = builder(spec, station_id)
    return source
