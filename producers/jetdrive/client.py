"""JetDriveClient: the socket shell around JetDriveDecoder for an edge agent.

It joins the multicast group, feeds every datagram to the decoder, sends what the decoder asks for
(Pongs, Pings, RequestChannelInfo), and hands `dyno_sample_batch` records to a callback every
`batch_interval_s`. It is a blocking loop on purpose: the edge agent runs it in a thread and stops it
with an Event, which needs no event loop and keeps the hot path (one recv, one feed) plain.

Multicast on one machine: SO_REUSEADDR (and SO_REUSEPORT where the OS has it) are set before bind so
several JetDrive nodes on one PC share the port, and IP_MULTICAST_LOOP stays on so they hear each other.
The socket binds the wildcard address (binding an interface address receives no multicast on Linux)
and joins the group on `interface`. For tests on loopback pass interface "127.0.0.1": Linux then
delivers the group on `lo` even without a multicast route there.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from fleetstream.producers.jetdrive.batches import samples_to_batches
from fleetstream.producers.jetdrive.decoder import DecodedSample, JetDriveCounters, JetDriveDecoder
from fleetstream.producers.jetdrive.protocol import ALL_HOSTS, DEFAULT_GROUP, DEFAULT_PORT

__all__ = ["JetDriveClient", "now_ms", "open_multicast_socket", "random_host_id"]

log = logging.getLogger(__name__)

_RECV_BYTES = 65535


def now_ms() -> int:
    """Wall-clock epoch milliseconds, the time base of every sample."""
    return time.time_ns() // 1_000_000


def random_host_id() -> int:
    """A host id as the spec asks: random, never 0 nor ALL_HOSTS."""
    return secrets.randbelow(ALL_HOSTS - 1) + 1


def open_multicast_socket(group: str, port: int, interface: str = "0.0.0.0", ttl: int = 1) -> socket.socket:
    """A UDP socket bound to `port`, member of `group` on `interface`, sending to the group through it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("", port))
        iface = socket.inet_aton(interface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + iface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot join JetDrive group {group}:{port} on interface {interface}: "
                                 f"{exc.strerror}") from exc
    return sock


class JetDriveClient:
    """Listens to a JetDrive network and delivers canonical `dyno_sample_batch` records.

    `station_id` names the dyno cell (the records' Kafka key). `run()` blocks until `stop` is set; the
    callback runs on the caller's thread, and an exception from it ends `run()` (a spool that cannot
    store is not something to listen past). `counters` can be read from any thread.
    """

    def __init__(self, station_id: str, *, group: str = DEFAULT_GROUP, port: int = DEFAULT_PORT,
                 interface: str = "0.0.0.0", host: int | None = None, run_id: str = "",
                 batch_interval_s: float = 0.25, max_batch_samples: int = 10_000, resync_interval_s: float = 30.0,
                 decoder: JetDriveDecoder | None = None):
        self.station_id = station_id
        self.group, self.port, self.interface = group, port, interface
        self.run_id = run_id
        self.batch_interval_s = batch_interval_s
        self.max_batch_samples = max_batch_samples
        self.resync_interval_s = resync_interval_s
        self.decoder = decoder or JetDriveDecoder(host if host is not None else random_host_id())
        self.connected = False
        self.last_sample_ms: int | None = None
        self.send_errors = 0

    @property
    def counters(self) -> JetDriveCounters:
        return self.decoder.counters

    def health(self) -> dict[str, Any]:
        """Connection state, last sample time and the decoder's counters."""
        return {"connected": self.connected, "last_sample_ms": self.last_sample_ms, "host": self.decoder.host,
                "send_errors": self.send_errors, **self.counters.snapshot()}

    def run(self, on_batch: Callable[[list[dict[str, Any]]], None], stop: threading.Event) -> None:
        """Receive until `stop` is set, calling `on_batch` with the records of each batch interval."""
        sock = open_multicast_socket(self.group, self.port, self.interface)
        sock.settimeout(min(0.05, self.batch_interval_s))
        self.connected = True
        pending: list[DecodedSample] = []
        next_flush = time.monotonic() + self.batch_interval_s
        next_resync = time.monotonic() + self.resync_interval_s
        try:
            while not stop.is_set():
                pending.extend(self._receive(sock))
                self._send_outgoing(sock)
                clock = time.monotonic()
                if clock >= next_resync:
                    self.decoder.ping_all(now_ms())
                    next_resync = clock + self.resync_interval_s
                if pending and (clock >= next_flush or len(pending) >= self.max_batch_samples):
                    self._flush(pending, on_batch)
                    pending = []
                if clock >= next_flush:
                    next_flush = clock + self.batch_interval_s
            if pending:
                self._flush(pending, on_batch)
        finally:
            self.connected = False
            sock.close()

    def _receive(self, sock: socket.socket) -> list[DecodedSample]:
        try:
            datagram = sock.recv(_RECV_BYTES)
        except TimeoutError:
            self.decoder.tick(now_ms())
            return []
        samples = self.decoder.feed(datagram, now_ms())
        if samples:
            self.last_sample_ms = samples[-1].timestamp_ms
        return samples

    def _send_outgoing(self, sock: socket.socket) -> None:
        for datagram in self.decoder.take_outgoing():
            try:
                sock.sendto(datagram, (self.group, self.port))
            except OSError as exc:  # a full buffer or a vanished route must not stop reception
                self.send_errors += 1
                log.warning("jetdrive: cannot send to %s:%s: %s", self.group, self.port, exc)

    def _flush(self, samples: list[DecodedSample], on_batch: Callable[[list[dict[str, Any]]], None]) -> None:
        on_batch(samples_to_batches(samples, self.station_id, self.run_id))
