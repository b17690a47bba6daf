"""JetDriveDecoder: KLHDV datagrams in, canonical samples out, with no sockets.

The decoder keeps what a JetDrive listener must remember between datagrams: each provider's channel
table (from ChannelInfo), its sequence number, and its clock offset (from Ping/Pong). Channels are keyed
by (provider host, channel id) because real dynos appear as several providers whose ids collide.

What a listener must *send* (Pong replies, RequestChannelInfo for unknown channels, Pings for clock
sync) is queued and handed out by `take_outgoing()`, so the socket shell stays a thin loop and all the
protocol logic is testable with plain bytes.

Timestamps: providers stamp values in ms since they started. After a Ping/Pong exchange a value's epoch
time is `ts + offset - latency` (the spec's formula, Cristian's algorithm: the exchange with the smallest
round trip is kept). Until a provider has answered a ping, its first value is mapped to the receive time
of the datagram that carried it and later values keep their spacing from there, so samples are usable at
once and off at most by the network delay of that first datagram.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from fleetstream.producers.jetdrive.protocol import (
    ALL_HOSTS,
    DEFAULT_MTU_BYTES,
    ChannelInfo,
    ChannelValue,
    ChannelValues,
    ClearChannelInfo,
    FrameError,
    Message,
    Ping,
    Pong,
    RequestChannelInfo,
    Sender,
    Unsupported,
    decode_datagram,
)
from fleetstream.schemas.units import canonical_unit, to_canonical, unknown_unit

__all__ = [
    "CHANNEL_ALIASES",
    "UNIT_NAMES",
    "ClockSync",
    "DecodedSample",
    "JetDriveCounters",
    "JetDriveDecoder",
    "canonical_channel_name",
    "unit_spelling",
]

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF

# JetDrive unit code -> unit spelling understood by schemas.units.to_canonical.
UNIT_NAMES: dict[int, str] = {
    0: "s", 1: "m", 2: "km/h", 3: "N", 4: "kW", 5: "N·m", 6: "degC", 7: "kPa", 8: "rpm", 9: "ratio",
    10: "km/h/s", 11: "AFR", 12: "kg/h", 13: "lambda", 14: "V", 15: "A", 16: "%",
    254: unknown_unit("jetdrive unit 254, extended"),  # vendor-defined: values pass unchanged, unit unknown
    255: "",  # none
}


def unit_spelling(unit_code: int) -> str | None:
    """The to_canonical spelling of a JetDrive unit code, None for a code the spec does not define."""
    return UNIT_NAMES.get(unit_code)

# Slugified provider channel name -> canonical channel name. Anything else keeps its slug.
CHANNEL_ALIASES: dict[str, str] = {
    "rpm": "engine_speed", "engine_rpm": "engine_speed", "engine_speed": "engine_speed",
    "power": "power", "horsepower": "power", "hp": "power",
    "torque": "torque", "engine_torque": "torque",
    "air_fuel_ratio": "afr", "afr": "afr", "a_f_ratio": "afr",
    "map": "map", "manifold_absolute_pressure": "map",
    "iat": "iat", "intake_air_temp": "iat", "intake_air_temperature": "iat",
    "tps": "tps", "throttle": "tps", "throttle_position": "tps",
}


def canonical_channel_name(provider_channel_name: str, channel_id: int) -> str:
    """The snake_case channel name used downstream for a provider's channel name."""
    slug = re.sub(r"[^a-z0-9]+", "_", provider_channel_name.lower()).strip("_")
    return CHANNEL_ALIASES.get(slug, slug) or f"channel_{channel_id}"


@dataclass(frozen=True, slots=True)
class DecodedSample:
    """One value in canonical units, with its provider and epoch timestamp."""

    host: int
    provider: str
    channel_id: int
    channel: str
    unit: str
    timestamp_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class ClockSync:
    """A provider's clock relative to ours: epoch_ms = provider_ts + offset_ms - latency_ms."""

    offset_ms: int
    latency_ms: int
    measured_at_ms: int


@dataclass
class JetDriveCounters:
    """What the decoder saw; errors and unsupported messages are counted by reason, gaps per host."""

    datagrams: int = 0
    samples: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unsupported: Counter[str] = field(default_factory=Counter)
    seq_gaps: Counter[int] = field(default_factory=Counter)  # messages missing, per host
    out_of_order: Counter[int] = field(default_factory=Counter)  # per host
    dropped_before_info: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # own echo, not addressed to us, from ALL_HOSTS
    recent_errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def snapshot(self) -> dict[str, Any]:
        """Plain data for logs, health endpoints and `fleetstream inspect`."""
        return {
            "datagrams": self.datagrams, "samples": self.samples, "messages": dict(self.messages),
            "errors": dict(self.errors), "unsupported": dict(self.unsupported),
            "seq_gaps": sum(self.seq_gaps.values()), "out_of_order": sum(self.out_of_order.values()),
            "dropped_before_info": self.dropped_before_info, "ignored": dict(self.ignored),
            "recent_errors": list(self.recent_errors),
        }


@dataclass(frozen=True, slots=True)
class _Channel:
    name: str
    unit_name: str  # JetDrive unit as a to_canonical spelling
    unit: str  # canonical unit


@dataclass(slots=True)
class _Provider:
    name: str = ""
    channels: dict[int, _Channel] = field(default_factory=dict)
    last_sequence: int | None = None
    sync: ClockSync | None = None
    first_value_offset_ms: int | None = None  # fallback mapping until a Pong arrives
    pinged: bool = False
    held: deque[tuple[int, ChannelValue]] = field(default_factory=deque)  # (receive ms, value)
    info_requested_at_ms: int | None = None


class JetDriveDecoder:
    """Decodes datagrams from any number of providers into canonical samples.

    `host` is this listener's own id (used to ignore its own echoed datagrams and to address replies).
    Values for channels not yet announced are held up to `hold_ms` (at most `max_held_per_host`) while a
    RequestChannelInfo goes out at most every `request_interval_ms`; whatever is still unknown when the
    hold expires is counted in `dropped_before_info`.
    """

    def __init__(self, host: int, *, hold_ms: int = 2000, max_held_per_host: int = 10_000,
                 request_interval_ms: int = 500, sync_max_age_ms: int = 300_000,
                 mtu_bytes: int = DEFAULT_MTU_BYTES):
        self.host = host
        self.hold_ms = hold_ms
        self.max_held_per_host = max_held_per_host
        self.request_interval_ms = request_interval_ms
        self.sync_max_age_ms = sync_max_age_ms
        self.counters = JetDriveCounters()
        self._sender = Sender(host, mtu_bytes)
        self._providers: dict[int, _Provider] = {}
        self._outgoing: list[bytes] = []

    # --- public API -----------------------------------------------------------------------------------

    def feed(self, datagram: bytes, recv_time_ms: int) -> list[DecodedSample]:
        """Decode one datagram received at `recv_time_ms` (epoch ms); never raises on bad input."""
        self.counters.datagrams += 1
        messages, errors = decode_datagram(datagram)
        for error in errors:
            self._count_error(error)
        self._expire(recv_time_ms)
        samples: list[DecodedSample] = []
        for message in messages:
            samples.extend(self._handle(message, recv_time_ms))
        self.counters.samples += len(samples)
        return samples

    def take_outgoing(self) -> list[bytes]:
        """Datagrams the socket shell must send to the group (Pongs, Pings, RequestChannelInfo)."""
        out, self._outgoing = self._outgoing, []
        return out

    def tick(self, now_ms: int) -> int:
        """Expire held values when no datagram arrives (the shell calls this on receive timeouts)."""
        return self._expire(now_ms)

    def drop_held(self) -> int:
        """Drop every held value as `dropped_before_info` (the stream ended); returns how many."""
        dropped = sum(len(p.held) for p in self._providers.values())
        for provider in self._providers.values():
            provider.held.clear()
        self.counters.dropped_before_info += dropped
        return dropped

    def ping_all(self, now_ms: int) -> None:
        """Queue a Ping to every provider, to refresh clock syncs (drift, better latency)."""
        for host in self._providers:
            self._send(Ping(now_ms & _U32), host)

    def channels(self) -> dict[tuple[int, int], tuple[str, str, str]]:
        """Known channels: (host, channel id) -> (provider name, canonical channel, canonical unit)."""
        return {(host, cid): (p.name, c.name, c.unit)
                for host, p in self._providers.items() for cid, c in p.channels.items()}

    def clock_sync(self, host: int) -> ClockSync | None:
        """The clock sync in force for a provider, if it has answered a ping."""
        provider = self._providers.get(host)
        return provider.sync if provider else None

    # --- message handling -----------------------------------------------------------------------------

    def _handle(self, message: Message, now_ms: int) -> list[DecodedSample]:
        body = message.body
        kind = type(body).__name__
        if message.host == ALL_HOSTS:
            self.counters.ignored["source_all_hosts"] += 1
            return []
        if message.host == self.host:
            self.counters.ignored["own_echo"] += 1  # multicast loopback hands us our own datagrams
            return []
        self.counters.messages[kind] += 1
        provider = self._provider(message.host, now_ms)
        self._track_sequence(message.host, provider, message.sequence)
        match body:
            case ChannelValues(values=values):
                return self._on_values(message.host, provider, values, now_ms)
            case ChannelInfo():
                return self._on_info(message.host, provider, body)
            case ClearChannelInfo():
                # channels, sequence and clock all go: a provider that went offline restarts all three
                self.counters.dropped_before_info += len(provider.held)
                del self._providers[message.host]
            case Unsupported(key=key):
                self.counters.unsupported[f"0x{key:02x}"] += 1
            case Ping() | Pong() | RequestChannelInfo() if message.destination not in (self.host, ALL_HOSTS):
                self.counters.ignored["not_addressed_to_us"] += 1
            case Ping(host_timestamp_ms=host_ts, echo=echo):
                self._send(Pong(host_ts, now_ms & _U32, echo), message.host)
            case Pong():
                self._on_pong(provider, body, now_ms)
        return []  # RequestChannelInfo: we are a listener and announce no channels

    def _provider(self, host: int, now_ms: int) -> _Provider:
        provider = self._providers.get(host)
        if provider is None:
            provider = self._providers[host] = _Provider()
        if not provider.pinged:  # first contact: start a clock sync
            provider.pinged = True
            self._send(Ping(now_ms & _U32), host)
        return provider

    def _track_sequence(self, host: int, provider: _Provider, sequence: int) -> None:
        last = provider.last_sequence
        if last is not None:
            ahead = (sequence - last - 1) % 256  # 0 when in order; wraps 255 -> 0
            if ahead >= 128:  # a lower (or repeated) number: late datagram, keep the high-water mark
                self.counters.out_of_order[host] += 1
                return
            self.counters.seq_gaps[host] += ahead
        provider.last_sequence = sequence

    def _on_info(self, host: int, provider: _Provider, info: ChannelInfo) -> list[DecodedSample]:
        provider.name = info.provider_name
        for channel in info.channels:
            unit_name = unit_spelling(channel.unit_code)
            if unit_name is None:
                unit_name = unknown_unit(f"jetdrive unit {channel.unit_code}")
                self._count_error(FrameError("unknown_unit_code", 0, f"host 0x{host:04x} channel {channel.channel_id} "
                                             f"{channel.name!r} unit code {channel.unit_code}; values passed "
                                             f"unchanged as {unit_name}"))
            provider.channels[channel.channel_id] = _Channel(
                canonical_channel_name(channel.name, channel.channel_id), unit_name, canonical_unit(unit_name))
        return self._release(host, provider)

    def _on_values(self, host: int, provider: _Provider, values: tuple[ChannelValue, ...],
                   now_ms: int) -> list[DecodedSample]:
        if provider.first_value_offset_ms is None and values:
            provider.first_value_offset_ms = now_ms - values[0].timestamp_ms
        samples: list[DecodedSample] = []
        channels = provider.channels
        for value in values:
            channel = channels.get(value.channel_id)
            if channel is None:
                self._hold(host, provider, value, now_ms)
            else:
                samples.append(self._sample(host, provider, channel, value))
        return samples

    def _on_pong(self, provider: _Provider, pong: Pong, now_ms: int) -> None:
        latency_ms = ((now_ms & _U32) - pong.host_timestamp_ms) % (_U32 + 1) // 2
        best = provider.sync
        if best is None or latency_ms <= best.latency_ms or now_ms - best.measured_at_ms > self.sync_max_age_ms:
            provider.sync = ClockSync(now_ms - pong.remote_timestamp_ms, latency_ms, now_ms)

    # --- values before their ChannelInfo ------------------------------------------------------------

    def _hold(self, host: int, provider: _Provider, value: ChannelValue, now_ms: int) -> None:
        if len(provider.held) >= self.max_held_per_host:
            provider.held.popleft()
            self.counters.dropped_before_info += 1
        provider.held.append((now_ms, value))
        last = provider.info_requested_at_ms
        if last is None or now_ms - last >= self.request_interval_ms:
            provider.info_requested_at_ms = now_ms
            self._send(RequestChannelInfo(), host)

    def _release(self, host: int, provider: _Provider) -> list[DecodedSample]:
        samples: list[DecodedSample] = []
        still_held: deque[tuple[int, ChannelValue]] = deque()
        for received_ms, value in provider.held:
            channel = provider.channels.get(value.channel_id)
            if channel is None:
                still_held.append((received_ms, value))
            else:
                samples.append(self._sample(host, provider, channel, value))
        provider.held = still_held
        return samples

    def _expire(self, now_ms: int) -> int:
        """Drop held values older than the hold time; returns how many were dropped."""
        dropped = 0
        for provider in self._providers.values():
            held = provider.held
            while held and now_ms - held[0][0] > self.hold_ms:
                held.popleft()
                dropped += 1
        self.counters.dropped_before_info += dropped
        return dropped

    # --- helpers ------------------------------------------------------------------------------------

    def _sample(self, host: int, provider: _Provider, channel: _Channel, value: ChannelValue) -> DecodedSample:
        converted, unit = to_canonical(value.value, channel.unit_name)
        return DecodedSample(host, provider.name, value.channel_id, channel.name, unit,
                             self._epoch_ms(provider, value.timestamp_ms), converted)

    @staticmethod
    def _epoch_ms(provider: _Provider, provider_ts_ms: int) -> int:
        if provider.sync is not None:
            return provider_ts_ms + provider.sync.offset_ms - provider.sync.latency_ms
        return provider_ts_ms + (provider.first_value_offset_ms or 0)

    def _send(self, body: Ping | Pong | RequestChannelInfo, destination: int) -> None:
        self._outgoing.extend(self._sender.datagrams(body, destination))

    def _count_error(self, error: FrameError) -> None:
        self.counters.errors[error.reason] += 1
        self.counters.recent_errors.append(str(error))
        log.debug("jetdrive: %s", error)
