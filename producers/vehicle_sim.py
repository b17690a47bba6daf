"""Simulated vehicles for the demo and tests: signals, GPS tracks, DTCs and network statistics.

Each vehicle drives a loop around a start point with a plausible engine (RPM follows speed and gear,
throttle, manifold pressure, intake temperature, AFR). With `bad_sample_rate` it deliberately emits bad
data the validator must catch: NaN values, values outside the hard sensor ranges, and now and then a
malformed message (bytes that are not Avro), so the dead-letter path is exercised end to end.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fleetstream.producers.edge import EdgeProducer

__all__ = ["MALFORMED", "TOPICS", "SimulatedVehicle", "VehicleFleetSimulator", "run_simulation"]

TOPICS = ("telemetry.signals", "telemetry.dtcs", "telemetry.gps", "telemetry.netstats")
"""The topics the simulator publishes to."""

MALFORMED = b"\xc3\x01not-a-known-fingerprint"
"""What a corrupted message looks like: the Avro marker, then garbage. Counted as one produced sample."""

_CHANNELS = [  # name, unit, message, ECU
    ("EngineSpeed", "rpm", "EEC1", "ECM"),
    ("VehicleSpeed", "mph", "CCVS", "ECM"),
    ("ThrottlePosition", "%", "EEC2", "ECM"),
    ("MAP", "kPa", "IC1", "ECM"),
    ("IntakeAirTemp", "degF", "IC1", "ECM"),
    ("AFR", "AFR", "O2S", "ECM"),
    ("CoolantTemp", "degF", "ET1", "ECM"),
]


@dataclass
class SimulatedVehicle:
    """One vehicle's state; `step(dt_s)` advances it and returns the channel values at that instant."""

    vehicle_id: str
    device_id: str
    fleet_id: str
    org_id: str
    rng: random.Random
    lat: float = 37.7749
    lon: float = -122.4194
    heading_deg: float = 0.0
    speed_mph: float = 0.0
    target_mph: float = 35.0
    coolant_f: float = 120.0
    odometer_mi: float = 0.0

    def step(self, dt_s: float) -> dict[str, float]:
        if self.rng.random() < 0.02 * dt_s:
            self.target_mph = self.rng.choice([0.0, 25.0, 35.0, 45.0, 65.0])
        accel = max(-6.0, min(4.0, (self.target_mph - self.speed_mph) * 0.5))
        self.speed_mph = max(0.0, self.speed_mph + accel * dt_s)
        self.heading_deg = (self.heading_deg + self.rng.uniform(-3, 3) * dt_s) % 360
        miles = self.speed_mph * dt_s / 3600
        self.odometer_mi += miles
        self.lat += miles / 69.0 * math.cos(math.radians(self.heading_deg))
        self.lon += miles / (69.0 * math.cos(math.radians(self.lat))) * math.sin(math.radians(self.heading_deg))
        self.coolant_f = min(195.0, self.coolant_f + 0.5 * dt_s)
        gear_ratio = 3.0 if self.speed_mph < 20 else 1.6 if self.speed_mph < 45 else 1.0
        throttle = max(0.0, min(100.0, 12 + accel * 12 + self.speed_mph * 0.4 + self.rng.gauss(0, 2)))
        return {
            "EngineSpeed": max(650.0, self.speed_mph * 38 * gear_ratio + self.rng.gauss(0, 15)),
            "VehicleSpeed": self.speed_mph,
            "ThrottlePosition": throttle,
            "MAP": 30 + throttle * 0.7 + self.rng.gauss(0, 1),
            "IntakeAirTemp": 75 + self.rng.gauss(0, 1.5),
            "AFR": 14.7 - max(0.0, throttle - 60) * 0.04 + self.rng.gauss(0, 0.1),
            "CoolantTemp": self.coolant_f,
        }


@dataclass
class VehicleFleetSimulator:
    """A fleet of simulated vehicles producing records ready for the edge producer.

    `tick(now_ms)` returns (topic, key, record-or-bytes) tuples for one interval: one signal batch per
    vehicle and channel (samples at `sample_hz`), one GPS batch per vehicle, network statistics every
    10 s, and a DTC now and then. `seed` makes the values repeatable; batch ids are random (uuid4), unique
    across runs and processes, as a live source's must be.
    """

    vehicles: int = 5
    sample_hz: float = 10.0
    bad_sample_rate: float = 0.01
    malformed_rate: float = 0.002
    seed: int = 7
    first_vehicle_id: int = 1001
    """Vehicle ids are integers (as the vehicle client and the GraphQL backend know them), from this one up."""
    source: str = "vehicle_sim"
    rng: random.Random = field(init=False)
    fleet: list[SimulatedVehicle] = field(init=False)
    _last_ms: int | None = field(default=None, init=False)
    _netstats_due_ms: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.fleet = [
            SimulatedVehicle(vehicle_id=str(self.first_vehicle_id + i),
                             device_id=str(50_000 + self.first_vehicle_id + i), fleet_id="42", org_id="7",
                             rng=random.Random(self.seed * 1000 + i), lat=37.77 + i * 0.01, lon=-122.42 - i * 0.01)
            for i in range(self.vehicles)
        ]

    def tick(self, now_ms: int) -> list[tuple[str, str, dict[str, Any] | bytes]]:
        start_ms = self._last_ms if self._last_ms is not None else now_ms - 1000
        self._last_ms = now_ms
        step_ms = int(1000 / self.sample_hz)
        times = list(range(start_ms + step_ms, now_ms + 1, step_ms))
        out: list[tuple[str, str, dict[str, Any] | bytes]] = []
        for vehicle in self.fleet:
            out.extend(self._vehicle_records(vehicle, times, step_ms / 1000))
        if now_ms >= self._netstats_due_ms:
            self._netstats_due_ms = now_ms + 10_000
            out.extend(("telemetry.netstats", v.vehicle_id, self._netstats(v, now_ms)) for v in self.fleet)
        return out

    def _vehicle_records(self, vehicle: SimulatedVehicle, times: list[int],
                         dt_s: float) -> Iterator[tuple[str, str, dict[str, Any] | bytes]]:
        values: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in _CHANNELS}
        points = []
        for t in times:
            reading = vehicle.step(dt_s)
            for name, value in reading.items():
                values[name].append({"timestamp_ms": t, "value": self._maybe_corrupt(name, value)})
            points.append(self._gps_point(vehicle, t))
        for name, unit, message, ecu in _CHANNELS:
            if values[name]:
                yield "telemetry.signals", vehicle.vehicle_id, self._signal(vehicle, name, unit, message, ecu,
                                                                            values[name])
        if points:
            yield "telemetry.gps", vehicle.vehicle_id, {**self._ids(vehicle), "points": points}
        if self.rng.random() < self.malformed_rate * len(_CHANNELS):
            yield "telemetry.signals", vehicle.vehicle_id, MALFORMED
        if times and self.rng.random() < 0.01:
            yield "telemetry.dtcs", vehicle.vehicle_id, self._dtc(vehicle, times[-1])

    def _maybe_corrupt(self, name: str, value: float) -> float:
        if self.rng.random() >= self.bad_sample_rate:
            return value
        if name == "EngineSpeed" and self.rng.random() < 0.5:
            return 25_000.0  # above the 20,000 rpm hard limit
        return math.nan

    def _ids(self, vehicle: SimulatedVehicle) -> dict[str, Any]:
        # Not from the seeded rng: a second run with the same seed would repeat every batch id, and the sink
        # would take its records for re-sent copies of the first run's.
        return {"batch_id": str(uuid.uuid4()), "source": self.source,
                "org_id": vehicle.org_id, "fleet_id": vehicle.fleet_id, "vehicle_id": vehicle.vehicle_id,
                "device_id": vehicle.device_id}

    def _signal(self, vehicle: SimulatedVehicle, name: str, unit: str, message: str, ecu: str,
                samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._ids(vehicle), "name": name, "unit": unit, "message_name": message, "network_name": "CAN1",
                "ecu_name": ecu, "arb_id": "", "param_type": "RAW", "signal_type": "SIGNAL", "samples": samples}

    def _gps_point(self, vehicle: SimulatedVehicle, t: int) -> dict[str, Any]:
        return {"timestamp_ms": t, "latitude": vehicle.lat, "longitude": vehicle.lon, "accuracy_m": 4.0,
                "altitude_m": 20.0, "speed": vehicle.speed_mph, "bearing_deg": vehicle.heading_deg,
                "available": {"accuracy": True, "altitude": True, "bearing": True, "speed": True, "time": True}}

    def _dtc(self, vehicle: SimulatedVehicle, t: int) -> dict[str, Any]:
        code, text = self.rng.choice([("P0301", "Cylinder 1 Misfire Detected"),
                                      ("P0420", "Catalyst System Efficiency Below Threshold"),
                                      ("B19B0-49", "Head-Up Display - Internal Electronic Failure")])
        return {**self._ids(vehicle), "name": "DTC", "message_name": "DM1", "network_name": "CAN1",
                "ecu_name": "ECM", "ecu_id": "14DA80F1",
                "dtcs": [{"dtc_id": code, "status": "2F", "description": text, "timestamp_ms": t}]}

    def _netstats(self, vehicle: SimulatedVehicle, t: int) -> dict[str, Any]:
        total = self.rng.randint(900, 1100)
        matched = int(total * self.rng.uniform(0.9, 0.99))
        errors = self.rng.randint(0, 5)
        return {**self._ids(vehicle), "timestamp_ms": t, "name": "CAN1", "upload_id": None,
                "total_messages": total, "matched_messages": matched, "unmatched_messages": total - matched,
                "error_messages": errors, "long_message_parts": 0, "min_time_ms": t - 10_000, "max_time_ms": t,
                "rate": total / 10.0}


def run_simulation(simulator: VehicleFleetSimulator, producer: EdgeProducer, seconds: float,
                   tick_s: float = 0.5, stop: threading.Event | None = None) -> None:
    """Publish the simulator's records in real time for `seconds` (or until `stop` is set).

    Returns once the last tick is queued; the caller confirms delivery (`producer.confirm()`, or the
    producer's `with` block) before it reports what was sent.
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        for topic, key, record in simulator.tick(int(time.time() * 1000)):
            if isinstance(record, bytes):
                producer.publish_bytes(topic, key, record, simulator.source, samples=1)
            else:
                producer.publish(topic, key, record)
        stop.wait(max(0.0, tick_s - (time.monotonic() - started)))
