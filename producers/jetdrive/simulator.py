"""JetDriveSimulator: a JetDrive provider that streams repeated dyno pulls on the multicast group.

It speaks the real wire format the way a dyno CPU does: ChannelInfo at start and every 30 s (and when
asked with RequestChannelInfo), Pong to every Ping, ChannelValues at `rate_hz`, ClearChannelInfo when
it stops. Values go out in JetDrive's SI units (kW, N·m, N, km/h, °C, kPa), so a listener's conversion
to canonical units is exercised.

The physics follow an inertia dyno: the engine's torque curve drives the drum, the drum force is what a
dyno measures, and power and torque are derived from it as the dyno does:
hp = force_lbf * drum_circumference_ft * drum_rpm / 33000 and torque_ftlb = 5252 * hp / engine_rpm.
Everything random comes from one seeded generator, so a seed gives the same stream every time.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from fleetstream.producers.jetdrive.client import open_multicast_socket, random_host_id
from fleetstream.producers.jetdrive.protocol import (
    ALL_HOSTS,
    DEFAULT_GROUP,
    DEFAULT_MTU_BYTES,
    DEFAULT_PORT,
    ChannelDef,
    ChannelInfo,
    ChannelValue,
    ChannelValues,
    ClearChannelInfo,
    Ping,
    Pong,
    RequestChannelInfo,
    Sender,
    decode_datagram,
)

__all__ = ["SIM_CHANNELS", "DynoPullModel", "DynoPullProfile", "JetDriveSimulator"]

_KW_PER_HP = 0.745699872
_NM_PER_FTLB = 1 / 0.737562149
_N_PER_LBF = 1 / 0.224808943
_KMH_PER_MPH = 1 / 0.621371192
_U32 = 0xFFFFFFFF

# The channels the simulated dyno CPU announces: (id, name, JetDrive unit code).
SIM_CHANNELS: tuple[ChannelDef, ...] = (
    ChannelDef(1, "Engine RPM", 8),
    ChannelDef(2, "Torque", 5),  # N·m
    ChannelDef(3, "Power", 4),  # kW
    ChannelDef(4, "Air/Fuel Ratio", 11),
    ChannelDef(5, "MAP", 7),  # kPa
    ChannelDef(6, "Intake Air Temp", 6),  # °C
    ChannelDef(7, "TPS", 16),  # %
    ChannelDef(8, "Drum Speed", 2),  # km/h
    ChannelDef(9, "Drum Force", 3),  # N
)


@dataclass(frozen=True)
class DynoPullProfile:
    """One cycle: a wide-open-throttle sweep, a coast-down, then idle before the next pull."""

    start_rpm: float = 2500.0
    end_rpm: float = 6500.0
    pull_s: float = 8.0
    coast_s: float = 3.0
    idle_s: float = 4.0
    peak_torque_ftlb: float = 300.0
    peak_torque_rpm: float = 4500.0
    drum_circumference_ft: float = 10.0
    engine_revs_per_drum_rev: float = 5.7  # gearing and tyre: at 6500 rpm the drum turns ~1140 rpm (~130 mph)
    drivetrain_efficiency: float = 0.85

    @property
    def cycle_s(self) -> float:
        return self.pull_s + self.coast_s + self.idle_s


class DynoPullModel:
    """Channel values (SI, as on the wire) at a time since the simulation started."""

    def __init__(self, profile: DynoPullProfile | None = None, seed: int = 0):
        self.profile = profile or DynoPullProfile()
        self._rng = random.Random(seed)

    def values_si(self, elapsed_s: float) -> dict[int, float]:
        """Channel id -> value in the channel's JetDrive unit."""
        p = self.profile
        t = elapsed_s % p.cycle_s
        if t < p.pull_s:
            rpm, tps, load = p.start_rpm + (p.end_rpm - p.start_rpm) * t / p.pull_s, 100.0, 1.0
        elif t < p.pull_s + p.coast_s:
            rpm, tps, load = p.end_rpm - (p.end_rpm - p.start_rpm) * (t - p.pull_s) / p.coast_s, 0.0, 0.0
        else:
            rpm, tps, load = p.start_rpm + self._rng.gauss(0, 15), 8.0, 0.05
        rpm = max(rpm, 1.0)
        drum_rpm = rpm / p.engine_revs_per_drum_rev
        engine_hp = self._engine_torque_ftlb(rpm) * rpm / 5252 * load * p.drivetrain_efficiency
        force_lbf = max(0.0, engine_hp * 33000 / (p.drum_circumference_ft * drum_rpm) + self._rng.gauss(0, 2) * load)
        hp = force_lbf * p.drum_circumference_ft * drum_rpm / 33000
        torque_ftlb = 5252 * hp / rpm
        speed_mph = drum_rpm * p.drum_circumference_ft * 60 / 5280
        afr = (13.0 if load > 0.5 else 15.5 if tps == 0 else 14.7) + self._rng.gauss(0, 0.12)
        map_kpa = 30 + 68 * load ** 0.5 + self._rng.gauss(0, 0.5)
        iat_c = 30 + 6 * (t / p.cycle_s) + self._rng.gauss(0, 0.1)
        return {1: rpm, 2: torque_ftlb * _NM_PER_FTLB, 3: hp * _KW_PER_HP, 4: afr, 5: map_kpa, 6: iat_c,
                7: tps, 8: speed_mph * _KMH_PER_MPH, 9: force_lbf * _N_PER_LBF}

    def _engine_torque_ftlb(self, rpm: float) -> float:
        p = self.profile
        span = (p.end_rpm - p.start_rpm) / 2
        return p.peak_torque_ftlb * (1 - 0.15 * ((rpm - p.peak_torque_rpm) / span) ** 2)


class JetDriveSimulator:
    """A simulated dyno provider: `datagrams_at`/`replies_to` are pure, `run` puts them on the network."""

    def __init__(self, *, group: str = DEFAULT_GROUP, port: int = DEFAULT_PORT, interface: str = "0.0.0.0",
                 host: int | None = None, provider_name: str = "Dynojet Dyno CPU", seed: int = 0,
                 rate_hz: float = 50.0, info_interval_s: float = 30.0, profile: DynoPullProfile | None = None,
                 mtu_bytes: int = DEFAULT_MTU_BYTES):
        self.group, self.port, self.interface = group, port, interface
        self.provider_name = provider_name
        self.rate_hz = rate_hz
        self.info_interval_ms = int(info_interval_s * 1000)
        self.model = DynoPullModel(profile, seed)
        self.sender = Sender(host if host is not None else random_host_id(), mtu_bytes)
        self._next_info_ms = 0
        self.sent_datagrams = 0
        self.sent_values = 0

    @property
    def host(self) -> int:
        return self.sender.host

    def channel_info(self) -> list[bytes]:
        """The ChannelInfo datagrams announcing every simulated channel."""
        return self.sender.datagrams(ChannelInfo(self.provider_name, SIM_CHANNELS))

    def datagrams_at(self, elapsed_ms: int) -> list[bytes]:
        """What the provider sends at `elapsed_ms` since start: ChannelInfo when due, then one tick of values."""
        out: list[bytes] = []
        if elapsed_ms >= self._next_info_ms:
            out.extend(self.channel_info())
            self._next_info_ms = elapsed_ms + self.info_interval_ms
        values = self.model.values_si(elapsed_ms / 1000)
        stamp = elapsed_ms & _U32
        body = ChannelValues(tuple(ChannelValue(cid, stamp, value) for cid, value in values.items()))
        out.extend(self.sender.datagrams(body))
        self.sent_values += len(values)
        return out

    def replies_to(self, datagram: bytes, elapsed_ms: int) -> list[bytes]:
        """Answers to a received datagram: Pong for a Ping, ChannelInfo for a RequestChannelInfo."""
        messages, _errors = decode_datagram(datagram)  # a provider ignores what it cannot read
        out: list[bytes] = []
        for message in messages:
            if message.host == self.host or message.destination not in (self.host, ALL_HOSTS):
                continue
            match message.body:
                case Ping(host_timestamp_ms=host_ts, echo=echo):
                    out.extend(self.sender.datagrams(Pong(host_ts, elapsed_ms & _U32, echo), message.host))
                case RequestChannelInfo():
                    out.extend(self.channel_info())
        return out

    def stop_datagrams(self) -> list[bytes]:
        """The ClearChannelInfo a provider sends when it goes offline."""
        return self.sender.datagrams(ClearChannelInfo())

    def capture(self, duration_s: float) -> Iterator[tuple[int, bytes]]:
        """(elapsed ms, datagram) of a whole session without a network: for fixtures and offline tests."""
        period_ms = 1000 / self.rate_hz
        tick = 0
        while (elapsed_ms := round(tick * period_ms)) < duration_s * 1000:
            for datagram in self.datagrams_at(elapsed_ms):
                yield elapsed_ms, datagram
            tick += 1
        for datagram in self.stop_datagrams():
            yield round(duration_s * 1000), datagram

    def run(self, stop: threading.Event) -> None:
        """Stream on the group until `stop` is set, answering pings and info requests in between ticks."""
        sock = open_multicast_socket(self.group, self.port, self.interface)
        start = time.monotonic()
        period_s = 1 / self.rate_hz
        next_tick = start
        try:
            while not stop.is_set():
                clock = time.monotonic()
                if clock >= next_tick:
                    self._send(sock, self.datagrams_at(int((clock - start) * 1000)))
                    next_tick = max(next_tick + period_s, clock - period_s)  # never burst to catch up
                readable, _, _ = select.select([sock], [], [], max(0.0, next_tick - time.monotonic()))
                if readable:
                    datagram = sock.recv(65535)
                    self._send(sock, self.replies_to(datagram, int((time.monotonic() - start) * 1000)))
            self._send(sock, self.stop_datagrams())
        finally:
            sock.close()

    def _send(self, sock: socket.socket, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            sock.sendto(datagram, (self.group, self.port))
            self.sent_datagrams += 1
