"""Innovate MTS (Serial Protocol 2, "ISP2"): the wire format, its constants, and encoding and decoding of words (pure).

An MTS chain (LC-1, LC-2, DLG-1 and LM-1 wideband controllers, SSI-4 and other aux boxes) streams one packet
every 81.92 ms at 19200 8N1 from the head of the chain. A packet is 16-bit big-endian words: a header word
(bits 15, 13, 9, 7 set; bit 12 = 1 for data, 0 for a reply; bit 14 = recording; bit 11 = log capable;
bit 8 and bits 6..0 = payload length in words) followed by each device's sub-packet, furthest device first.
There is no checksum: framing rests on marker bits, so the decoder resynchronises by scanning for a header.

Word types inside a payload, and how this module tells them apart (the ISP2 spec's marker bits):
- wideband (LC-1/LC-2/DLG-1) word 0: `0 1 0 F2 F1 F0 1 AF7 | 0 AF6..AF0`, detected by `(w & 0xE280) == 0x4200`,
  followed by the lambda word `0 0 L12..L7 | 0 L6..L0`;
- LM-1 word 0: `1 R 0 F2 F1 F0 0 AF7 | 0 AF6..AF0`, detected by `(w & 0xA280) == 0x8000`, followed by the lambda
  word and then the battery word `0 0 mb2 mb1 mb0 bv9 bv8 bv7 | 0 bv6..bv0` and up to five aux words;
- aux word (13 data bits, usually 10 significant): `0 0 D12..D7 | 0 D6..D0`, detected by `(w & 0xC080) == 0`.

Ambiguities resolved here (documented because the spec leaves them open):
- Only a header word has bit 7 set. A payload word with bit 7 set therefore means the packet was cut short
  (bytes lost, a device reset): the partial packet is dropped and counted, and scanning restarts at that word.
- A word that matches no type (for instance bit 14 set without the wideband markers) means corruption; as
  there is no checksum to say what else is damaged, the whole packet is dropped and counted.
- The LM-1 battery word and aux words have the same bit layout. The word right after an LM-1 lambda word is
  read as its battery; every later plain word is an aux channel, numbered across the chain in packet order.
- With several sensors in a chain the first sensor's AFR multiplier applies to all (the ISP2 rule); a chain
  multiplier of 0 (no fuel configured) yields λ but no AFR.
- The 'S' (device information) reply is 15 raw bytes without a header (see S.txt in the tests). It is only
  looked for after `expect_device_info()` (the reader arms it when it sends 'S'), at a packet boundary, and
  only accepted when its 4-character type is printable ASCII; otherwise the bytes go through normal resync.
  Layout as in Innovate's type response: firmware version u16 (nibbles, 0x123A = 1.23 build A), type (4
  ASCII characters), CPU code, channel count/flags, then 7 bytes whose meaning is not public (kept raw).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from fleetstream.errors import FleetstreamError

__all__ = [
    "BAUDRATE",
    "DATA_BIT",
    "DEVICE_INFO_BYTES",
    "DEVICE_INFO_WAIT_PACKETS",
    "HEADER_MASK",
    "PACKET_INTERVAL_MS",
    "SOURCE",
    "Command",
    "DeviceInfo",
    "InnovateFormatError",
    "Packet",
    "SensorReading",
    "SensorState",
    "decode_payload",
    "encode_aux",
    "encode_device_info",
    "encode_header",
    "encode_lm1",
    "encode_packet",
    "encode_wideband",
    "lambda_to_raw",
    "parse_device_info",
    "unpack8",
]

SOURCE = "innovate"
BAUDRATE = 19200
PACKET_INTERVAL_MS = 81.92  # 8 MHz / 655360: the chain head's packet period
DEVICE_INFO_BYTES = 15
DEVICE_INFO_WAIT_PACKETS = 25  # about 2 s of packets for an 'S' reply to arrive
MAX_PAYLOAD_WORDS = 0xFF  # 8 length bits
MAX_13BIT = 0x1FFF
DEFAULT_AFR_MULTIPLIER = 147  # gasoline, stoichiometric AFR 14.7 * 10 (what the simulator sends)
VOLTS_PER_COUNT = 5.0 / 1023  # aux words: 0 = 0 V, 1023 = 5 V (ISP2)

HEADER_MASK = 0xA280
DATA_BIT = 0x1000
_RECORDING_BIT = 0x4000
_LOG_CAPABLE_BIT = 0x0800
_WIDEBAND_MASK, _WIDEBAND_MARK = 0xE280, 0x4200
_LM1_MASK, _LM1_MARK = 0xA280, 0x8000
_PLAIN_MASK = 0xC080  # aux, lambda and battery words: bits 15, 14 and 7 clear


class SensorState(StrEnum):
    """What a wideband sensor's function code says about its lambda word."""

    OK = "ok"  # 000: lambda valid
    O2_PERCENT = "o2_percent"  # 001: O2 level in 0.1 % (free air)
    CALIBRATING = "calibrating"  # 010: free-air calibration running
    NEEDS_CALIBRATION = "needs_calibration"  # 011
    WARMING_UP = "warming_up"  # 100: % of operating temperature in 0.1 %
    HEATER_CALIBRATION = "heater_calibration"  # 101: countdown
    ERROR = "error"  # 110: error code in the lambda word
    RESERVED = "reserved"  # 111


_STATE_BY_FUNCTION: tuple[SensorState, ...] = tuple(SensorState)


class Command(StrEnum):
    """Single-byte commands the chain understands."""

    SYNC = "H"
    START_RECORDING = "R"
    STOP_RECORDING = "r"
    CALIBRATE = "c"
    DEVICE_INFO = "S"


class InnovateFormatError(FleetstreamError, ValueError):
    """Bytes that are not valid ISP2; `word_index` locates the problem inside a payload (-1: not in one)."""

    def __init__(self, reason: str, detail: str, word_index: int = -1):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.word_index = reason, detail, word_index


# --- encoding ---------------------------------------------------------------------------------------------


def _pack13(value: int, what: str) -> int:
    """A 13-bit value in the ISP2 layout `0 0 v12..v7 | 0 v6..v0` (the low byte's top bit stays clear)."""
    if not 0 <= value <= MAX_13BIT:
        raise ValueError(f"{what} {value} outside 0..{MAX_13BIT}")
    return ((value >> 7) << 8) | (value & 0x7F)


def _unpack13(word: int) -> int:
    return ((word >> 1) & 0x1F80) | (word & 0x7F)


def unpack8(word: int) -> int:
    """The 8-bit field split as bit 8 (high) and bits 6..0: header length, AFR multiplier."""
    return ((word >> 1) & 0x80) | (word & 0x7F)


def _check(value: int, low: int, high: int, what: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} outside {low}..{high}")


def encode_header(payload_words: int, *, is_data: bool = True, recording: bool = False) -> int:
    """The header word for `payload_words` words; 0xB282 is a data packet with one wideband sub-packet."""
    _check(payload_words, 0, MAX_PAYLOAD_WORDS, "payload length")
    word = HEADER_MASK | ((payload_words >> 7) << 8) | (payload_words & 0x7F)
    return word | (DATA_BIT if is_data else 0) | (_RECORDING_BIT if recording else 0)


def _function_word(base: int, function_code: int, afr_multiplier: int) -> int:
    _check(function_code, 0, 7, "function code")
    _check(afr_multiplier, 0, 0xFF, "AFR multiplier")
    return base | (function_code << 10) | ((afr_multiplier >> 7) << 8) | (afr_multiplier & 0x7F)


def encode_wideband(function_code: int, value: int, afr_multiplier: int = DEFAULT_AFR_MULTIPLIER) -> tuple[int, int]:
    """The two words of an LC-1/LC-2/DLG-1 sub-packet; `value` is the 13-bit lambda word (L, %, code...)."""
    return _function_word(_WIDEBAND_MARK, function_code, afr_multiplier), _pack13(value, "lambda word")


def encode_lm1(function_code: int, value: int, afr_multiplier: int = DEFAULT_AFR_MULTIPLIER, *,
               battery_raw: int = 0, battery_divider: int = 0, recording: bool = False) -> tuple[int, int, int]:
    """The function, lambda and battery words of an LM-1 sub-packet (its aux words follow as `encode_aux`)."""
    _check(battery_raw, 0, 0x3FF, "battery value")
    _check(battery_divider, 0, 7, "battery divider")
    word0 = _function_word(_LM1_MARK | (_RECORDING_BIT if recording else 0), function_code, afr_multiplier)
    battery = (battery_divider << 11) | ((battery_raw >> 7) << 8) | (battery_raw & 0x7F)
    return word0, _pack13(value, "lambda word"), battery


def encode_aux(value: int) -> int:
    """An aux word carrying a 13-bit value (10 significant bits on most devices: 0 = 0 V, 1023 = 5 V)."""
    return _pack13(value, "aux value")


def encode_packet(payload: Sequence[int], *, is_data: bool = True, recording: bool = False) -> bytes:
    """Header plus payload words as wire bytes (big-endian words)."""
    header = encode_header(len(payload), is_data=is_data, recording=recording)
    return struct.pack(f">{len(payload) + 1}H", header, *payload)


def lambda_to_raw(lambda_value: float) -> int:
    """The lambda word for λ: L = λ * 1000 - 500 (0.001 steps from λ 0.5)."""
    raw = round(lambda_value * 1000) - 500
    _check(raw, 0, MAX_13BIT, "lambda word")
    return raw


# --- decoded types --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SensorReading:
    """One wideband sensor's sub-packet; λ and AFR are only given while the state is ok."""

    device: Literal["wideband", "lm1"]
    function_code: int
    raw_value: int  # the 13-bit lambda word: L, O2 ‰, warm-up ‰, countdown or error code by function
    afr_multiplier: int  # stoichiometric AFR * 10 as this sensor sent it
    chain_afr_multiplier: int  # the first sensor's, which ISP2 applies to the whole chain
    battery_volts: float | None = None  # LM-1 only
    recording: bool = False  # LM-1 only

    @property
    def state(self) -> SensorState:
        return _STATE_BY_FUNCTION[self.function_code]

    @property
    def state_label(self) -> str:
        """The `sensor_state` of a dyno_sample_batch: the state, with the code for errors (`error:5`)."""
        return f"error:{self.raw_value}" if self.state is SensorState.ERROR else self.state.value

    @property
    def lambda_value(self) -> float | None:
        return (self.raw_value + 500) / 1000 if self.state is SensorState.OK else None

    @property
    def afr(self) -> float | None:
        lam = self.lambda_value
        return None if lam is None or self.chain_afr_multiplier == 0 else lam * self.chain_afr_multiplier / 10

    @property
    def o2_percent(self) -> float | None:
        return self.raw_value / 10 if self.state is SensorState.O2_PERCENT else None

    @property
    def warmup_percent(self) -> float | None:
        return self.raw_value / 10 if self.state is SensorState.WARMING_UP else None

    @property
    def heater_countdown(self) -> int | None:
        return self.raw_value if self.state is SensorState.HEATER_CALIBRATION else None

    @property
    def error_code(self) -> int | None:
        return self.raw_value if self.state is SensorState.ERROR else None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The 15-byte reply to 'S'. Confidence in fields after the type is medium (layout of Innovate's type query)."""

    firmware_version: int  # u16, nibbles: 0x100F = 1.00 build F
    device_type: str  # 4 ASCII characters, e.g. "SSI4", "LC-1"
    cpu: int
    channels: int  # channel count/flags (4 on an SSI-4)
    extra: bytes  # 7 bytes, meaning not public

    @property
    def version_text(self) -> str:
        v = self.firmware_version
        return f"{v >> 12}.{(v >> 8) & 0xF}{(v >> 4) & 0xF}"


def parse_device_info(data: bytes) -> DeviceInfo:
    """Parse a 15-byte 'S' reply; raises InnovateFormatError when the bytes cannot be one."""
    if len(data) != DEVICE_INFO_BYTES:
        raise InnovateFormatError("device_info_length", f"{len(data)} bytes, expected {DEVICE_INFO_BYTES}")
    kind = data[2:6]
    if not all(0x20 <= b <= 0x7E for b in kind):
        raise InnovateFormatError("device_info_type", f"type bytes {kind.hex(' ')} are not printable ASCII")
    return DeviceInfo(int.from_bytes(data[0:2], "big"), kind.decode("ascii"), data[6], data[7], bytes(data[8:]))


def encode_device_info(info: DeviceInfo) -> bytes:
    """The wire bytes of an 'S' reply (used by the simulator)."""
    kind = info.device_type.encode("ascii")
    if len(kind) != 4 or len(info.extra) != 7:
        raise ValueError("device type must be 4 ASCII characters and extra 7 bytes")
    return struct.pack(">H4sBB7s", info.firmware_version, kind, info.cpu, info.channels, info.extra)


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded frame: a data packet, a reply packet, or an 'S' device-info reply.

    `offset` is the stream offset (bytes fed since the decoder was created) of its first byte. Data packets
    carry `sensors` (chain order) and `aux` (13-bit values, chain order); replies keep their raw words.
    """

    offset: int
    kind: Literal["data", "reply", "device_info"]
    header: int = 0
    words: tuple[int, ...] = ()
    sensors: tuple[SensorReading, ...] = ()
    aux: tuple[int, ...] = ()
    device_info: DeviceInfo | None = None

    @property
    def recording(self) -> bool:
        return bool(self.header & _RECORDING_BIT)

    @property
    def log_capable(self) -> bool:
        return bool(self.header & _LOG_CAPABLE_BIT)

    @property
    def reply_type(self) -> int | None:
        """A reply's first word (the query it answers), 13-bit like an aux word."""
        return _unpack13(self.words[0]) if self.kind == "reply" and self.words else None

    @property
    def size_bytes(self) -> int:
        return DEVICE_INFO_BYTES if self.kind == "device_info" else 2 + 2 * len(self.words)

    def to_bytes(self) -> bytes:
        if self.device_info is not None:
            return encode_device_info(self.device_info)
        return struct.pack(f">{len(self.words) + 1}H", self.header, *self.words)


def decode_payload(words: Sequence[int]) -> tuple[tuple[SensorReading, ...], tuple[int, ...]]:
    """Split a data packet's payload into sensor readings and aux values (see the module doc for the rules)."""
    raw: list[tuple[Literal["wideband", "lm1"], int, int, float | None]] = []  # device, word0, lambda, volts
    aux: list[int] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word & _WIDEBAND_MASK == _WIDEBAND_MARK:
            raw.append(("wideband", word, _lambda_word(words, i), None))
            i += 2
        elif word & _LM1_MASK == _LM1_MARK:
            lam = _lambda_word(words, i)
            has_battery = i + 2 < len(words) and words[i + 2] & _PLAIN_MASK == 0
            volts = _battery_volts(words[i + 2]) if has_battery else None
            raw.append(("lm1", word, lam, volts))
            i += 3 if has_battery else 2
        elif word & _PLAIN_MASK == 0:
            aux.append(_unpack13(word))
            i += 1
        else:
            raise InnovateFormatError("invalid_word", f"word {i} = 0x{word:04X} is no ISP2 payload word", i)
    chain_af = unpack8(raw[0][1]) if raw else 0
    sensors = tuple(
        SensorReading(device, (w0 >> 10) & 7, lam, unpack8(w0), chain_af, volts,
                      device == "lm1" and bool(w0 & _RECORDING_BIT))  # bit 14 is a marker in wideband word 0
        for device, w0, lam, volts in raw
    )
    return sensors, tuple(aux)


def _lambda_word(words: Sequence[int], i: int) -> int:
    if i + 1 >= len(words):
        raise InnovateFormatError("short_sub_packet", f"sensor word {i} = 0x{words[i]:04X} has no lambda word", i)
    word = words[i + 1]
    if word & _PLAIN_MASK:
        raise InnovateFormatError("invalid_word", f"lambda word {i + 1} = 0x{word:04X} has marker bits set", i + 1)
    return _unpack13(word)


def _battery_volts(word: int) -> float:
    """LM-1 battery: 10-bit value * 5 * divider / 1023 volts."""
    divider = (word >> 11) & 7
    value = ((word >> 1) & 0x380) | (word & 0x7F)
    return value * 5 * divider / 1023
