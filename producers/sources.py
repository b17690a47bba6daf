"""The source adapters an edge agent can run, by `type` in agent.yaml.

Each builder turns a `SourceSpec` into a `Source`: a callable that runs until `stop` is set and hands
records to `emit` (which makes them durable). Keep adapters thin: decoding lives in the source's own module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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


SOURCE_TYPES: dict[str, Callable[[Any, str], Any]] = {
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
