"""The source adapters an edge agent can run, by `type` in agent.yaml.

Each builder turns a `SourceSpec` into a `Source`: a callable that runs until `stop` is set and hands
records to `emit` (which makes them durable). Keep adapters thin: decoding lives in the source's own module.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.agent import Emit, Source, SourceSpec

__all__ = ["SOURCE_TYPES", "build_source"]


def _vehicle_sim(spec: SourceSpec, station_id: str) -> Source:
    from producers.vehicle_sim import VehicleFleetSimulator

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


def _jetdrive(spec: SourceSpec, station_id: str) -> Source:
    """JetDrive multicast client; options: group, port, interface, run_id, batch_interval_s."""
    from producers.jetdrive import JetDriveClient

    client = JetDriveClient(station_id, **spec.options)

    def run(emit: Emit, stop: threading.Event) -> None:
        client.run(lambda records: emit([("dyno.samples", station_id, r) for r in records]), stop)

    return run


def _jetdrive_sim(spec: SourceSpec, station_id: str) -> Source:
    """A simulated dyno provider on the multicast group (for demos and tests); options as JetDriveSimulator."""
    from producers.jetdrive import JetDriveSimulator

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
    from producers.innovate import AuxChannel, InnovateReader, InnovateSimulator

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
    from producers.fleet import TOKEN_VARIABLES, build_poller

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
