"""The JetDrive KLHDV wire format: message types, encoding, decoding and splitting to the MTU.

Dynojet's JETDRIVE Network Specification (rev 2.1.1) frames every UDP datagram as an 8-byte
little-endian header (key u8 · length u16 · host u16 · sequence u8 · destination u16) followed by
`length` bytes of value. This module is pure: bytes in, typed messages out, and the reverse. Decoding
never raises: a datagram that cannot be read yields `FrameError`s naming the offset and the reason, so
the receive loop counts them and goes on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

__all__ = [
    "ALL_HOSTS",
    "CHANNEL_INFO_RECORD_BYTES",
    "CHANNEL_NAME_BYTES",
    "CHANNEL_VALUE_RECORD_BYTES",
    "DEFAULT_GROUP",
    "DEFAULT_MTU_BYTES",
    "DEFAULT_PORT",
    "HEADER_BYTES",
    "JETDRIVE_VERSION",
    "PROVIDER_NAME_BYTES",
    "Body",
    "ChannelDef",
    "ChannelInfo",
    "ChannelValue",
    "ChannelValues",
    "ClearChannelInfo",
    "FrameError",
    "Message",
    "MessageKey",
    "Ping",
    "Pong",
    "RequestChannelInfo",
    "Sender",
    "Unsupported",
    "decode_datagram",
    "encode_message",
    "split_body",
]

DEFAULT_GROUP = "224.0.2.10"  # the spec calls the address provisional: it is a setting everywhere
DEFAULT_PORT = 22344
DEFAULT_MTU_BYTES = 1400  # the reference implementation's cap for one datagram
ALL_HOSTS = 0xFFFF  # valid only as a destination
JETDRIVE_VERSION = 1
MIN_VERSION, MAX_VERSION = 1, 9  # versions 1-9 are wire compatible

HEADER_BYTES = 8
PROVIDER_NAME_BYTES = 50
CHANNEL_NAME_BYTES = 30
CHANNEL_INFO_RECORD_BYTES = 34  # id u16 · vendor u8 · name 30 · unit u8
CHANNEL_VALUE_RECORD_BYTES = 10  # id u16 · timestamp u32 · value f32
MAX_VALUE_BYTES = 0xFFFF

_HEADER = struct.Struct("<BHHBH")
_INFO_RECORD = struct.Struct(f"<HB{CHANNEL_NAME_BYTES}sB")
_VALUE_RECORD = struct.Struct("<HIf")
_PING = struct.Struct("<BI")
_PONG = struct.Struct("<BII")

_T = TypeVar("_T")


class MessageKey(IntEnum):
    """The `key` byte: which message a datagram carries."""

    CHANNEL_INFO = 0x01
    CHANNEL_VALUES = 0x02
    CLEAR_CHANNEL_INFO = 0x03
    PING = 0x04
    PONG = 0x05
    REQUEST_CHANNEL_INFO = 0x06
    LOGGING_REQUEST = 0x10
    LOAD_CONTROL_REQUEST = 0x11
    BRAKE_REQUEST = 0x12
    LOGGING_RESPONSE = 0x20
    LOAD_CONTROL_RESPONSE = 0x21
    BRAKE_RESPONSE = 0x22


OPTIONAL_KEYS = frozenset({0x10, 0x11, 0x12, 0x20, 0x21, 0x22})


@dataclass(frozen=True, slots=True)
class ChannelDef:
    """One channel a provider announces: its id (unique only within that provider), name and unit code."""

    channel_id: int
    name: str
    unit_code: int
    vendor: int = 0


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """0x01: the provider's name and (part of) its channel set; large sets span several messages."""

    provider_name: str
    channels: tuple[ChannelDef, ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelValue:
    """One sample: `timestamp_ms` is on the provider's clock (ms since the provider started), value as sent."""

    channel_id: int
    timestamp_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class ChannelValues:
    """0x02: samples of any of the provider's channels."""

    values: tuple[ChannelValue, ...] = ()


@dataclass(frozen=True, slots=True)
class ClearChannelInfo:
    """0x03: forget the sender's channels (it is going offline or about to announce a new set)."""


@dataclass(frozen=True, slots=True)
class Ping:
    """0x04: `host_timestamp_ms` is the pinger's own clock; `echo` comes back unchanged in the Pong."""

    host_timestamp_ms: int
    echo: bytes = b""
    version: int = JETDRIVE_VERSION


@dataclass(frozen=True, slots=True)
class Pong:
    """0x05: the ping's timestamp echoed, the responder's own clock, and the ping's echo bytes."""

    host_timestamp_ms: int
    remote_timestamp_ms: int
    echo: bytes = b""
    version: int = JETDRIVE_VERSION


@dataclass(frozen=True, slots=True)
class RequestChannelInfo:
    """0x06: ask the destination to send its ChannelInfo now."""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An optional message type (logging, load control, brake) this implementation does not act on."""

    key: int
    value: bytes = b""


Body = ChannelInfo | ChannelValues | ClearChannelInfo | Ping | Pong | RequestChannelInfo | Unsupported


@dataclass(frozen=True, slots=True)
class Message:
    """One KLHDV message: the header fields and the decoded value."""

    host: int
    sequence: int
    destination: int
    body: Body


@dataclass(frozen=True, slots=True)
class FrameError:
    """Why (part of) a datagram could not be read; `reason` is a short stable code for counters."""

    reason: str
    offset: int
    detail: str

    def __str__(self) -> str:
        return f"{self.reason} at byte {self.offset}: {self.detail}"


# --- encoding ----------------------------------------------------------------------------------------


def _fixed_utf8(text: str, size: int, what: str) -> bytes:
    """`text` as NUL-padded UTF-8 of exactly `size` bytes, cut at a character boundary if too long."""
    if "\0" in text:
        raise ValueError(f"{what} {text!r} contains a NUL character, which the wire format uses as padding")
    raw = text.encode("utf-8")[:size]
    raw = raw.decode("utf-8", errors="ignore").encode("utf-8")  # drop a multi-byte character cut in half
    return raw.ljust(size, b"\0")


def _key_of(body: Body) -> int:
    match body:
        case ChannelInfo():
            return MessageKey.CHANNEL_INFO
        case ChannelValues():
            return MessageKey.CHANNEL_VALUES
        case ClearChannelInfo():
            return MessageKey.CLEAR_CHANNEL_INFO
        case Ping():
            return MessageKey.PING
        case Pong():
            return MessageKey.PONG
        case RequestChannelInfo():
            return MessageKey.REQUEST_CHANNEL_INFO
        case Unsupported(key=key):
            return key
    raise TypeError(f"not a JetDrive message body: {body!r}")


def _encode_value(body: Body) -> bytes:
    match body:
        case ChannelInfo(provider_name=name, channels=channels):
            head = _fixed_utf8(name, PROVIDER_NAME_BYTES, "provider name")
            return head + b"".join(
                _INFO_RECORD.pack(c.channel_id, c.vendor, _fixed_utf8(c.name, CHANNEL_NAME_BYTES, "channel name"),
                                  c.unit_code)
                for c in channels
            )
        case ChannelValues(values=values):
            return b"".join(_VALUE_RECORD.pack(v.channel_id, v.timestamp_ms, v.value) for v in values)
        case Ping(host_timestamp_ms=ts, echo=echo, version=version):
            return _PING.pack(version, ts) + echo
        case Pong(host_timestamp_ms=host_ts, remote_timestamp_ms=own_ts, echo=echo, version=version):
            return _PONG.pack(version, host_ts, own_ts) + echo
        case Unsupported(value=value):
            return value
    return b""  # ClearChannelInfo and RequestChannelInfo carry no value


def encode_message(message: Message) -> bytes:
    """One datagram for `message`; raises ValueError if its value does not fit the u16 length field."""
    value = _encode_value(message.body)
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"{type(message.body).__name__} value is {len(value)} bytes, more than {MAX_VALUE_BYTES}; "
                         "split it with split_body first")
    header = _HEADER.pack(_key_of(message.body), len(value), message.host, message.sequence, message.destination)
    return header + value


def split_body(body: Body, mtu_bytes: int = DEFAULT_MTU_BYTES) -> list[Body]:
    """Split ChannelInfo/ChannelValues into complete messages whose datagrams fit in `mtu_bytes`.

    Every ChannelInfo part repeats the provider name, as the spec requires. Other bodies are returned
    as they are. An empty ChannelInfo/ChannelValues stays one (empty) message.
    """
    match body:
        case ChannelInfo(provider_name=name, channels=channels):
            per_part = (mtu_bytes - HEADER_BYTES - PROVIDER_NAME_BYTES) // CHANNEL_INFO_RECORD_BYTES
            _check_room(per_part, mtu_bytes, "ChannelInfo")
            return [ChannelInfo(name, part) for part in _chunks(channels, per_part)]
        case ChannelValues(values=values):
            per_part = (mtu_bytes - HEADER_BYTES) // CHANNEL_VALUE_RECORD_BYTES
            _check_room(per_part, mtu_bytes, "ChannelValues")
            return [ChannelValues(part) for part in _chunks(values, per_part)]
    return [body]


def _check_room(per_part: int, mtu_bytes: int, what: str) -> None:
    if per_part < 1:
        raise ValueError(f"an MTU of {mtu_bytes} bytes cannot hold even one {what} record")


def _chunks(items: tuple[_T, ...], size: int) -> list[tuple[_T, ...]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [()]


class Sender:
    """Stamps outgoing messages with this node's host id and its wrapping sequence number.

    One Sender per node: the sequence is per sender, so every datagram the node emits goes through it.
    """

    def __init__(self, host: int, mtu_bytes: int = DEFAULT_MTU_BYTES):
        if not 0 < host < ALL_HOSTS:
            raise ValueError(f"host id must be in 1..65534, got {host}")
        self.host = host
        self.mtu_bytes = mtu_bytes
        self._sequence = 0

    def datagrams(self, body: Body, destination: int = ALL_HOSTS) -> list[bytes]:
        """The datagrams that carry `body` to `destination`, split to the MTU, each with the next sequence."""
        out = []
        for part in split_body(body, self.mtu_bytes):
            self._sequence = (self._sequence + 1) % 256
            out.append(encode_message(Message(self.host, self._sequence, destination, part)))
        return out


# --- decoding ----------------------------------------------------------------------------------------


def decode_datagram(data: bytes) -> tuple[list[Message], list[FrameError]]:
    """All messages in a datagram (normally one) and the errors met while reading it; never raises."""
    messages: list[Message] = []
    errors: list[FrameError] = []
    offset = 0
    if not data:
        errors.append(FrameError("empty", 0, "datagram has no bytes"))
    while offset < len(data):
        if len(data) - offset < HEADER_BYTES:
            errors.append(FrameError("truncated_header", offset,
                                     f"{len(data) - offset} bytes left, a header needs {HEADER_BYTES}"))
            break
        key, length, host, sequence, destination = _HEADER.unpack_from(data, offset)
        start, end = offset + HEADER_BYTES, offset + HEADER_BYTES + length
        if end > len(data):
            errors.append(FrameError("truncated_value", offset,
                                     f"key 0x{key:02x} declares {length} value bytes, {len(data) - start} present"))
            break
        body = _decode_value(key, memoryview(data)[start:end].tobytes(), start, errors)
        if body is not None:
            messages.append(Message(host, sequence, destination, body))
        offset = end
    return messages, errors


def _decode_value(key: int, value: bytes, offset: int, errors: list[FrameError]) -> Body | None:
    match key:
        case MessageKey.CHANNEL_INFO:
            return _decode_channel_info(value, offset, errors)
        case MessageKey.CHANNEL_VALUES:
            return _decode_channel_values(value, offset, errors)
        case MessageKey.CLEAR_CHANNEL_INFO:
            return ClearChannelInfo()
        case MessageKey.REQUEST_CHANNEL_INFO:
            return RequestChannelInfo()
        case MessageKey.PING | MessageKey.PONG:
            return _decode_ping_pong(key, value, offset, errors)
    if key in OPTIONAL_KEYS:
        return Unsupported(key, value)
    errors.append(FrameError("unknown_key", offset - HEADER_BYTES, f"message key 0x{key:02x} is not in the spec"))
    return None


def _decode_channel_info(value: bytes, offset: int, errors: list[FrameError]) -> ChannelInfo | None:
    if len(value) < PROVIDER_NAME_BYTES:
        errors.append(FrameError("short_channel_info", offset,
                                 f"{len(value)} value bytes, the provider name alone needs {PROVIDER_NAME_BYTES}"))
        return None
    records = value[PROVIDER_NAME_BYTES:]
    whole = len(records) - len(records) % CHANNEL_INFO_RECORD_BYTES
    if whole != len(records):
        errors.append(FrameError("partial_channel_record", offset + PROVIDER_NAME_BYTES + whole,
                                 f"{len(records) - whole} bytes left over, records are {CHANNEL_INFO_RECORD_BYTES}"))
    channels = tuple(
        ChannelDef(channel_id, _fixed_text(name), unit_code, vendor)
        for channel_id, vendor, name, unit_code in _INFO_RECORD.iter_unpack(records[:whole])
    )
    return ChannelInfo(_fixed_text(value[:PROVIDER_NAME_BYTES]), channels)


def _decode_channel_values(value: bytes, offset: int, errors: list[FrameError]) -> ChannelValues:
    whole = len(value) - len(value) % CHANNEL_VALUE_RECORD_BYTES
    if whole != len(value):
        errors.append(FrameError("partial_value_record", offset + whole,
                                 f"{len(value) - whole} bytes left over, records are {CHANNEL_VALUE_RECORD_BYTES}"))
    return ChannelValues(tuple(ChannelValue(*record) for record in _VALUE_RECORD.iter_unpack(value[:whole])))


def _decode_ping_pong(key: int, value: bytes, offset: int, errors: list[FrameError]) -> Ping | Pong | None:
    fixed = _PING if key == MessageKey.PING else _PONG
    name = "ping" if key == MessageKey.PING else "pong"
    if len(value) < fixed.size:
        errors.append(FrameError(f"short_{name}", offset, f"{len(value)} value bytes, expected at least {fixed.size}"))
        return None
    if not MIN_VERSION <= value[0] <= MAX_VERSION:
        errors.append(FrameError("unsupported_version", offset,
                                 f"{name} version {value[0]}, supported {MIN_VERSION}..{MAX_VERSION}"))
        return None
    echo = value[fixed.size:]
    if key == MessageKey.PING:
        version, host_ts = _PING.unpack_from(value)
        return Ping(host_ts, echo, version)
    version, host_ts, remote_ts = _PONG.unpack_from(value)
    return Pong(host_ts, remote_ts, echo, version)


def _fixed_text(raw: bytes) -> str:
    """A NUL-padded UTF-8 field as text: up to the first NUL, undecodable bytes replaced (never raises)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")

