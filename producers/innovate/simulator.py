"""`InnovateSimulator`: an MTS chain streaming realistic packets, for tests, demos and the edge agent."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from fleetstream.producers.innovate.protocol import (
    DEFAULT_AFR_MULTIPLIER,
    MAX_13BIT,
    PACKET_INTERVAL_MS,
    Command,
    DeviceInfo,
    encode_aux,
    encode_device_info,
    encode_packet,
    encode_wideband,
    lambda_to_raw,
)
from fleetstream.producers.innovate.reader import SerialPort, open_port

__all__ = [
    "InnovateSimulator",
]


@dataclass(frozen=True, slots=True)
class _Phase:
    name: str
    packets: int
    rpm_from: float
    rpm_to: float
    lambda_from: float
    lambda_to: float


# One dyno pull cycle at 12.2 packets/s: idle, a wide-open-throttle pull running rich, a lean decel.
_PULL_CYCLE: tuple[_Phase, ...] = (
    _Phase("idle", 40, 900, 950, 1.00, 1.00),
    _Phase("pull", 110, 2000, 6800, 0.92, 0.85),
    _Phase("decel", 30, 6800, 1500, 1.35, 1.05),
)


class InnovateSimulator:
    """An LC-1 (plus an optional RPM converter on aux 1) speaking real ISP2 frames.

    It warms up for `warmup_packets` (function 100, % of operating temperature climbing to 100 %), then
    runs dyno pull cycles in normal mode (function 000). Everything random comes from one seeded generator,
    so a seed always gives the same bytes. With `junk_probability`, junk bytes are inserted before a packet;
    they are all below 0x80 so they can never be taken for a header, which keeps the expected packet count
    exact. `run()` writes at `interval_s` (81.92 ms like the real chain) and answers commands: 'S' with a
    device-info reply, 'c' with a free-air calibration, 'R'/'r' with the recording bit.
    """

    DEVICE_INFO = DeviceInfo(0x109F, "LC-1", 5, 1, bytes(7))
    CALIBRATION_PACKETS = 24

    def __init__(self, url: str | None = None, *, seed: int = 0, interval_s: float = PACKET_INTERVAL_MS / 1000,
                 warmup_packets: int = 50, aux_rpm: bool = True, extra_aux: int = 0,
                 junk_probability: float = 0.0, afr_multiplier: int = DEFAULT_AFR_MULTIPLIER):
        self.url, self.interval_s = url, interval_s
        self.warmup_packets, self.aux_rpm, self.extra_aux = warmup_packets, aux_rpm, extra_aux
        self.junk_probability, self.afr_multiplier = junk_probability, afr_multiplier
        self._rng = random.Random(seed)
        self._index = 0
        self._calibrating_left = 0
        self.recording = False
        self.packets_sent = 0
        self.junk_bytes = 0  # junk inserted by frame() so far

    def frame(self) -> bytes:
        """The next chunk on the wire: optional junk, then one packet."""
        junk = b""
        if self.junk_probability and self._rng.random() < self.junk_probability:
            junk = bytes(self._rng.randrange(0x80) for _ in range(self._rng.randint(1, 9)))
            self.junk_bytes += len(junk)
        payload = self._payload(self._index)
        self._index += 1
        return junk + encode_packet(payload, recording=self.recording)

    def frames(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield self.frame()

    def handle_command(self, byte: int) -> bytes:
        """React to a command byte; returns bytes to send back at once (the 'S' reply), else b""."""
        command = chr(byte)
        if command == Command.DEVICE_INFO:
            return encode_device_info(self.DEVICE_INFO)
        if command == Command.CALIBRATE:
            self._calibrating_left = self.CALIBRATION_PACKETS
        elif command in (Command.START_RECORDING, Command.STOP_RECORDING):
            self.recording = command == Command.START_RECORDING
        return b""

    def run(self, stop: threading.Event, max_packets: int | None = None) -> int:
        """Open `url` and stream until `stop` is set or `max_packets` were sent; the packets sent."""
        if self.url is None:
            raise ValueError("InnovateSimulator.run needs a serial URL")
        port = open_port(self.url, timeout_s=0)
        try:
            return self.stream_to(port, stop, max_packets)
        finally:
            port.close()

    def stream_to(self, port: SerialPort, stop: threading.Event, max_packets: int | None = None) -> int:
        """Write frames to an open port at `interval_s`, answering commands between packets."""
        next_at = time.monotonic()
        sent = 0
        while not stop.is_set() and (max_packets is None or sent < max_packets):
            for byte in port.read(port.in_waiting) if port.in_waiting else b"":
                reply = self.handle_command(byte)
                if reply:
                    port.write(reply)
            chunk = self.frame()
            port.write(chunk)
            sent += 1
            self.packets_sent += 1
            next_at += self.interval_s
            stop.wait(max(0.0, next_at - time.monotonic()))
        return sent

    def _payload(self, index: int) -> list[int]:
        rpm, lam = self._engine(index)
        words = list(self._sensor_words(index, lam))
        if self.aux_rpm:
            words.append(encode_aux(min(MAX_13BIT, round(rpm / 10))))  # RPM converter: word * 10 = rpm
        words.extend(encode_aux(self._rng.randrange(0, 1024)) for _ in range(self.extra_aux))
        return words

    def _sensor_words(self, index: int, lam: float) -> tuple[int, int]:
        if self._calibrating_left > 0:
            self._calibrating_left -= 1
            return encode_wideband(2, 0, self.afr_multiplier)
        if index < self.warmup_packets:
            permille = min(1000, round(1000 * (index + 1) / self.warmup_packets))
            return encode_wideband(4, permille, self.afr_multiplier)
        return encode_wideband(0, lambda_to_raw(lam), self.afr_multiplier)

    def _engine(self, index: int) -> tuple[float, float]:
        """RPM and λ at packet `index`: idle through warm-up, then pull cycles, with sensor noise."""
        if index < self.warmup_packets:
            return 900 + self._rng.gauss(0, 15), 1.0
        step = (index - self.warmup_packets) % sum(p.packets for p in _PULL_CYCLE)
        for phase in _PULL_CYCLE:
            if step < phase.packets:
                frac = step / phase.packets
                rpm = phase.rpm_from + (phase.rpm_to - phase.rpm_from) * frac
                lam = phase.lambda_from + (phase.lambda_to - phase.lambda_from) * math.sqrt(frac)
                return max(0.0, rpm + self._rng.gauss(0, 20)), min(2.0, max(0.6, lam + self._rng.gauss(0, 0.004)))
            step -= phase.packets
        raise AssertionError("unreachable: step is within the cycle")
