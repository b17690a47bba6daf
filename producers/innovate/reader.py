"""The serial shell an edge agent runs: `InnovateReader` reads a port through pyserial and feeds the decoder."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import serial

from fleetstream.producers.innovate.batches import AuxChannel, InnovateBatcher
from fleetstream.producers.innovate.decoder import InnovateDecoder, stamp_burst
from fleetstream.producers.innovate.protocol import BAUDRATE, Command, DeviceInfo
from fleetstream.producers.reliability import Backoff

__all__ = [
    "InnovateReader",
    "ReaderCounters",
    "open_port",
]

log = logging.getLogger(__name__)


class SerialPort(Protocol):
    """The part of pyserial's API the reader and simulator use (what serial_for_url returns)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


def open_port(url: str, timeout_s: float | None = 0.1) -> SerialPort:
    """Open any pyserial URL (device path, socket://, loop://, rfc2217://) at the MTS line settings, 19200 8N1."""
    port: SerialPort = serial.serial_for_url(url, baudrate=BAUDRATE, bytesize=serial.EIGHTBITS,
                                             parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                             timeout=timeout_s, write_timeout=5.0)
    return port


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ReaderCounters:
    """The reader's own counts; the decoder's (bytes, packets, resyncs, errors) are in `decoder`."""

    connects: int = 0
    connect_failures: int = 0
    read_errors: int = 0
    commands_sent: int = 0
    batches: int = 0
    samples: int = 0
    last_error: str = ""
    last_packet_ms: int = 0
    connected: bool = False


class InnovateReader:
    """Reads an MTS chain from a serial URL and hands `dyno_sample_batch` records to a callback.

    `run()` blocks until `stop` is set (an edge agent runs it in a thread); records are delivered every
    `batch_interval_s`, on the caller's thread, and an exception from the callback ends `run()`. A failing
    port is reopened with exponential backoff. `send()` may be called from any thread: commands are queued
    and written by the loop, so only one thread touches the port.
    """

    def __init__(self, url: str, station_id: str, *, run_id: str = "", aux_channels: Sequence[AuxChannel] = (),
                 timeout_s: float = 0.05, batch_interval_s: float = 1.0, max_samples_per_batch: int = 1000,
                 clock_ms: Callable[[], int] = _now_ms, opener: Callable[[str, float], SerialPort] = open_port,
                 backoff: Backoff | None = None, on_device_info: Callable[[DeviceInfo], None] | None = None):
        self.url, self.station_id = url, station_id
        self.timeout_s, self.batch_interval_s = timeout_s, batch_interval_s
        self.decoder = InnovateDecoder()
        self.batcher = InnovateBatcher(station_id, run_id=run_id, aux_channels=aux_channels,
                                       max_samples_per_batch=max_samples_per_batch)
        self.counters = ReaderCounters()
        self.device_info: DeviceInfo | None = None
        self._clock_ms, self._opener = clock_ms, opener
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=10.0)
        self._on_device_info = on_device_info
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._last_stamp_ms: int | None = None

    def send(self, command: Command | str) -> None:
        """Queue a command for the chain (H, R, r, c, S); 'S' arms the decoder for the device-info reply."""
        self._commands.put(Command(command))

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {"url": self.url, "connected": c.connected, "connects": c.connects,
                "connect_failures": c.connect_failures, "read_errors": c.read_errors,
                "commands_sent": c.commands_sent, "batches": c.batches, "samples": c.samples,
                "state_changes": self.batcher.state_changes, "last_packet_ms": c.last_packet_ms,
                "last_error": c.last_error, "decoder": self.decoder.counters.snapshot()}

    def run(self, on_batch: Callable[[list[dict[str, Any]]], None], stop: threading.Event) -> None:
        """Read, decode and deliver until `stop` is set; what is pending is delivered before returning."""
        try:
            while not stop.is_set():
                port = self._connect(stop)
                if port is None:
                    continue
                try:
                    self._pump(port, on_batch, stop)
                except (serial.SerialException, OSError) as exc:
                    self.counters.read_errors += 1
                    self.counters.last_error = f"read: {exc}"
                    log.warning("innovate %s: %s; reconnecting", self.url, exc)
                finally:
                    self.counters.connected = False
                    with contextlib.suppress(Exception):
                        port.close()
        finally:
            self._deliver(on_batch)

    def _connect(self, stop: threading.Event) -> SerialPort | None:
        try:
            port = self._opener(self.url, self.timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.counters.connect_failures += 1
            self.counters.last_error = f"open: {exc}"
            delay = self._backoff.next_delay()
            log.warning("innovate: cannot open %s (%s); retry in %.1f s", self.url, exc, delay)
            stop.wait(delay)
            return None
        self._backoff.reset()
        self.counters.connects += 1
        self.counters.connected = True
        return port

    def _pump(self, port: SerialPort, on_batch: Callable[[list[dict[str, Any]]], None],
              stop: threading.Event) -> None:
        last_flush_ms = self._clock_ms()
        while not stop.is_set():
            self._write_commands(port)
            chunk = port.read(max(1, port.in_waiting))
            now_ms = self._clock_ms()
            if chunk:
                self._ingest(chunk, now_ms)
            if now_ms - last_flush_ms >= self.batch_interval_s * 1000:
                self._deliver(on_batch)
                last_flush_ms = now_ms

    def _write_commands(self, port: SerialPort) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command is Command.DEVICE_INFO:
                self.decoder.expect_device_info()
            port.write(command.value.encode("ascii"))
            self.counters.commands_sent += 1

    def _ingest(self, chunk: bytes, received_ms: int) -> None:
        packets = self.decoder.feed(chunk)
        stamps = stamp_burst(packets, received_ms, self._last_stamp_ms)
        for stamp, packet in zip(stamps, packets, strict=True):
            self._last_stamp_ms = stamp
            if packet.device_info is not None:
                self.device_info = packet.device_info
                if self._on_device_info is not None:
                    self._on_device_info(packet.device_info)
            elif packet.kind == "data":
                self.batcher.add(stamp, packet)
                self.counters.last_packet_ms = stamp

    def _deliver(self, on_batch: Callable[[list[dict[str, Any]]], None]) -> None:
        records = self.batcher.take()
        if records:
            self.counters.batches += len(records)
            self.counters.samples += sum(len(r["samples"]) for r in records)
            on_batch(records)
