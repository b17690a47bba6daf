"""Innovate MTS (Serial Protocol 2, "ISP2") over serial: a pure decoder, the pyserial reader and a simulator.

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

Timestamps: the chain gives none. The reader stamps each packet with the epoch ms at which the read that
completed it returned; when one read completes several packets (the OS buffered a burst), the last gets the
receive time and each earlier one 81.92 ms less, the chain's cadence, so a burst is spread back over the time
it really took to send. Stamps never go backwards: a stamp at or before the previous one becomes previous + 1.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

import serial

from fleetstream.errors import FleetstreamError
from fleetstream.producers.reliability import Backoff
from fleetstream.schemas.units import UNKNOWN_UNIT, canonical_unit, to_canonical

__all__ = [
    "BAUDRATE",
    "DEVICE_INFO_BYTES",
    "DEVICE_INFO_WAIT_PACKETS",
    "PACKET_INTERVAL_MS",
    "SOURCE",
    "AuxChannel",
    "Command",
    "DecodeIssue",
    "DecoderCounters",
    "DeviceInfo",
    "InnovateBatcher",
    "InnovateDecoder",
    "InnovateFormatError",
    "InnovateReader",
    "InnovateSimulator",
    "Packet",
    "ReaderCounters",
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
    "open_port",
    "parse_device_info",
    "stamp_burst",
]

log = logging.getLogger(__name__)

SOURCE = "innovate"
BAUDRATE = 19200
PACKET_INTERVAL_MS = 81.92  # 8 MHz / 655360: the chain head's packet period
DEVICE_INFO_BYTES = 15
DEVICE_INFO_WAIT_PACKETS = 25  # about 2 s of packets for an 'S' reply to arrive
MAX_PAYLOAD_WORDS = 0xFF  # 8 length bits
MAX_13BIT = 0x1FFF
DEFAULT_AFR_MULTIPLIER = 147  # gasoline, stoichiometric AFR 14.7 * 10 (what the simulator sends)
VOLTS_PER_COUNT = 5.0 / 1023  # aux words: 0 = 0 V, 1023 = 5 V (ISP2)

_HEADER_MASK = 0xA280
_DATA_BIT = 0x1000
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


def _unpack8(word: int) -> int:
    """The 8-bit field split as bit 8 (high) and bits 6..0: header length, AFR multiplier."""
    return ((word >> 1) & 0x80) | (word & 0x7F)


def _check(value: int, low: int, high: int, what: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} outside {low}..{high}")


def encode_header(payload_words: int, *, is_data: bool = True, recording: bool = False) -> int:
    """The header word for `payload_words` words; 0xB282 is a data packet with one wideband sub-packet."""
    _check(payload_words, 0, MAX_PAYLOAD_WORDS, "payload length")
    word = _HEADER_MASK | ((payload_words >> 7) << 8) | (payload_words & 0x7F)
    return word | (_DATA_BIT if is_data else 0) | (_RECORDING_BIT if recording else 0)


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
    chain_af = _unpack8(raw[0][1]) if raw else 0
    sensors = tuple(
        SensorReading(device, (w0 >> 10) & 7, lam, _unpack8(w0), chain_af, volts,
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


# --- streaming decoder ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodeIssue:
    """One counted problem: where in the stream (byte offset), why, and the details an operator needs."""

    offset: int
    reason: str
    detail: str


@dataclass
class DecoderCounters:
    """What the decoder saw. Every byte fed ends in exactly one of packet, skipped, dropped or still buffered."""

    bytes_in: int = 0
    packet_bytes: int = 0
    skipped_bytes: int = 0  # junk between packets (resync)
    dropped_bytes: int = 0  # framed but invalid or cut-short packets
    packets: int = 0
    data_packets: int = 0
    reply_packets: int = 0
    device_infos: int = 0
    resyncs: int = 0  # runs of junk skipped
    errors: Counter[str] = field(default_factory=Counter)
    recent_issues: deque[DecodeIssue] = field(default_factory=lambda: deque(maxlen=50))

    def snapshot(self) -> dict[str, Any]:
        return {
            "bytes_in": self.bytes_in, "packet_bytes": self.packet_bytes, "skipped_bytes": self.skipped_bytes,
            "dropped_bytes": self.dropped_bytes, "packets": self.packets, "data_packets": self.data_packets,
            "reply_packets": self.reply_packets, "device_infos": self.device_infos, "resyncs": self.resyncs,
            "errors": dict(self.errors),
            "recent_issues": [f"@{i.offset} {i.reason}: {i.detail}" for i in self.recent_issues],
        }


def _is_header(high: int, low: int) -> bool:
    return ((high << 8) | low) & _HEADER_MASK == _HEADER_MASK


class InnovateDecoder:
    """ISP2 bytes in, packets out; no I/O. Keeps partial packets between `feed` calls and resyncs on junk."""

    def __init__(self, on_issue: Callable[[DecodeIssue], None] | None = None) -> None:
        """`on_issue` sees every issue as it is counted (`counters.recent_issues` keeps only the last 50)."""
        self.counters = DecoderCounters()
        self._on_issue = on_issue
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._junk_start: int | None = None
        self._junk_len = 0
        self._expect_info_packets = 0  # packets left before an awaited 'S' reply counts as missing

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def expect_device_info(self, within_packets: int = DEVICE_INFO_WAIT_PACKETS) -> None:
        """The 'S' command was sent: accept a 15-byte unframed reply at a packet boundary.

        The expectation lapses (counted as `device_info_missing`) after `within_packets` data packets, so
        junk long after the command is never taken for a reply.
        """
        self._expect_info_packets = within_packets

    def feed(self, data: bytes) -> list[Packet]:
        """Decode what `data` completes; bytes of a partial packet wait for the next call."""
        self.counters.bytes_in += len(data)
        self._buf += data
        out: list[Packet] = []
        pos = 0
        while (step := self._step(pos, out)) is not None:
            pos = step
        del self._buf[:pos]
        self._base += pos
        return out

    def finish(self) -> None:
        """End of stream: count what is still buffered (a partial packet or junk) as dropped."""
        if self._buf:
            self._issue(self._base, "truncated_at_end", f"{len(self._buf)} bytes of an unfinished packet or junk")
            self.counters.dropped_bytes += len(self._buf)
            self._base += len(self._buf)
            self._buf.clear()
        self._close_junk()

    def _step(self, pos: int, out: list[Packet]) -> int | None:
        """Consume one packet or one junk run at `pos`; the new position, or None to wait for more bytes."""
        buf = self._buf
        avail = len(buf) - pos
        header_here = avail >= 2 and _is_header(buf[pos], buf[pos + 1])
        if self._expect_info_packets and not header_here:
            if avail < DEVICE_INFO_BYTES:
                return None
            with contextlib.suppress(InnovateFormatError):
                info = parse_device_info(bytes(buf[pos:pos + DEVICE_INFO_BYTES]))
                self._expect_info_packets = 0
                self._emit(Packet(self._base + pos, "device_info", device_info=info), out)
                return pos + DEVICE_INFO_BYTES
        if avail < 2:
            return None
        if header_here:
            return self._take_packet(pos, out)
        return self._skip_junk(pos)

    def _skip_junk(self, pos: int) -> int | None:
        buf = self._buf
        nxt = next((i for i in range(pos + 1, len(buf) - 1) if _is_header(buf[i], buf[i + 1])), None)
        if nxt is None:  # keep the last byte when it could start a header
            nxt = len(buf) - 1 if buf[-1] & 0xA2 == 0xA2 else len(buf)
        if nxt == pos:
            return None
        if self._junk_start is None:
            self._junk_start, self._junk_len = self._base + pos, 0
        self._junk_len += nxt - pos
        self.counters.skipped_bytes += nxt - pos
        return nxt

    def _take_packet(self, pos: int, out: list[Packet]) -> int | None:
        buf = self._buf
        header = (buf[pos] << 8) | buf[pos + 1]
        n_words = _unpack8(header)
        end = pos + 2 + 2 * n_words
        available = min(n_words, (len(buf) - pos - 2) // 2)
        for k, word in enumerate(struct.unpack_from(f">{available}H", buf, pos + 2)):
            if word & 0x0080:  # only header words set this bit: a cut-short packet, or a header look-alike in junk
                self._issue(self._base + pos, "truncated_packet",
                            f"header 0x{header:04X} announced {n_words} words but word {k} is 0x{word:04X}; "
                            "rescanning from the next byte")
                return self._skip_junk(pos)
        if len(buf) < end:
            return None
        words = struct.unpack_from(f">{n_words}H", buf, pos + 2)
        offset = self._base + pos
        if not header & _DATA_BIT:
            self._emit(Packet(offset, "reply", header, words), out)
            return end
        try:
            sensors, aux = decode_payload(words)
        except InnovateFormatError as exc:
            self._drop(pos, end, exc.reason, f"header 0x{header:04X}: {exc.detail}")
            return end
        self._emit(Packet(offset, "data", header, words, sensors, aux), out)
        return end

    def _emit(self, packet: Packet, out: list[Packet]) -> None:
        self._close_junk()
        c = self.counters
        c.packets += 1
        c.packet_bytes += packet.size_bytes
        if packet.kind == "data":
            c.data_packets += 1
            self._count_down_device_info(packet.offset)
        elif packet.kind == "reply":
            c.reply_packets += 1
        else:
            c.device_infos += 1
        out.append(packet)

    def _count_down_device_info(self, offset: int) -> None:
        if self._expect_info_packets:
            self._expect_info_packets -= 1
            if not self._expect_info_packets:
                self._issue(offset, "device_info_missing", "no reply to 'S' arrived; no longer waiting for one")

    def _drop(self, start: int, end: int, reason: str, detail: str) -> None:
        self._close_junk()
        self.counters.dropped_bytes += end - start
        self._issue(self._base + start, reason, f"{detail}; {end - start} bytes dropped")

    def _close_junk(self) -> None:
        if self._junk_start is None:
            return
        self.counters.resyncs += 1
        self._issue(self._junk_start, "junk", f"skipped {self._junk_len} bytes before the next header")
        self._junk_start, self._junk_len = None, 0

    def _issue(self, offset: int, reason: str, detail: str) -> None:
        issue = DecodeIssue(offset, reason, detail)
        self.counters.errors[reason] += 1
        self.counters.recent_issues.append(issue)
        log.debug("innovate @%d %s: %s", offset, reason, detail)
        if self._on_issue is not None:
            self._on_issue(issue)


def stamp_burst(packets: Sequence[Packet], received_ms: int, previous_ms: int | None) -> list[int]:
    """Epoch-ms stamps for packets completed by one read: the last at `received_ms`, earlier ones 81.92 ms apart.

    Stamps are strictly increasing across calls (`previous_ms` is the last stamp given out).
    """
    stamps: list[int] = []
    last = previous_ms
    count = len(packets)
    for i in range(count):
        ts = received_ms - round((count - 1 - i) * PACKET_INTERVAL_MS)
        if last is not None and ts <= last:
            ts = last + 1
        stamps.append(ts)
        last = ts
    return stamps


# --- dyno_sample_batch records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuxChannel:
    """How to turn an aux word into a value: `raw * scale + offset` in `unit`, then converted to canonical units.

    The default reads volts (0 = 0 V, 1023 = 5 V); an RPM converter is `AuxChannel("engine_speed", 10.0, unit="rpm")`.
    A scaling of its own without a unit is not volts: its values go out unchanged as unit `unknown`.
    """

    name: str
    scale: float = VOLTS_PER_COUNT
    offset: float = 0.0
    unit: str | None = None
    """Unit of `raw * scale + offset`; None: V for the default scaling, else unknown (never assumed)."""

    @property
    def declared_unit(self) -> str:
        if self.unit is not None:
            return self.unit
        return "V" if (self.scale, self.offset) == (VOLTS_PER_COUNT, 0.0) else UNKNOWN_UNIT

    def value(self, raw: int) -> float:
        return to_canonical(raw * self.scale + self.offset, self.declared_unit)[0]

    @property
    def canonical_unit(self) -> str:
        return canonical_unit(self.declared_unit)


@dataclass
class _Run:
    """Samples of one (provider, channel) collected since the last flush, all in state ok."""

    unit: str
    first_ms: int
    samples: list[dict[str, Any]] = field(default_factory=list)


class InnovateBatcher:
    """Stamped packets in, `dyno_sample_batch` records out (schemas/avro/dyno_sample_batch/v2.avsc).

    Sensors are providers `wideband1`, `wideband2`... in chain order with channels `afr` (AFR) and `lambda`;
    aux words are provider `aux` with channels named by `aux_channels` (default aux1..auxN in volts). Samples
    only exist in state ok; when a sensor enters another state (warming up, O2 %, calibrating, error:<code>...),
    one record per channel with that `sensor_state` and no samples is emitted at once, whose `batch_id`
    carries the time the state began. `batch_id` = innovate:<station>:<provider>:<channel>:<first ms>, so a
    replay of the same stream yields the same ids.
    """

    def __init__(self, station_id: str, *, run_id: str = "", aux_channels: Sequence[AuxChannel] = (),
                 max_samples_per_batch: int = 1000):
        self.station_id, self.run_id = station_id, run_id
        self.aux_channels = tuple(aux_channels)
        self.max_samples_per_batch = max_samples_per_batch
        self._runs: dict[tuple[str, str], _Run] = {}
        self._ready: list[dict[str, Any]] = []
        self._states: dict[str, str] = {}
        self.state_changes = 0

    @property
    def pending_samples(self) -> int:
        return sum(len(r.samples) for r in self._runs.values())

    def add(self, timestamp_ms: int, packet: Packet) -> None:
        for position, sensor in enumerate(packet.sensors, start=1):
            self._add_sensor(f"wideband{position}", sensor, timestamp_ms)
        for index, raw in enumerate(packet.aux):
            channel = self._aux_channel(index)
            self._append("aux", channel.name, channel.canonical_unit, timestamp_ms, channel.value(raw))

    def take(self) -> list[dict[str, Any]]:
        """Every record ready now: state changes and the samples collected so far."""
        for key in list(self._runs):
            self._close(key)
        ready, self._ready = self._ready, []
        return ready

    def _aux_channel(self, index: int) -> AuxChannel:
        if index < len(self.aux_channels):
            return self.aux_channels[index]
        return AuxChannel(f"aux{index + 1}")

    def _add_sensor(self, provider: str, sensor: SensorReading, timestamp_ms: int) -> None:
        label = sensor.state_label
        if self._states.get(provider) != label:
            self._states[provider] = label
            self.state_changes += 1
            for channel in ("afr", "lambda"):
                self._close((provider, channel))
                if label != SensorState.OK:
                    unit = "AFR" if channel == "afr" else "lambda"
                    self._ready.append(self._record(provider, channel, unit, timestamp_ms, label, []))
        lam, afr = sensor.lambda_value, sensor.afr
        if lam is not None:
            self._append(provider, "lambda", "lambda", timestamp_ms, lam)
        if afr is not None:
            self._append(provider, "afr", "AFR", timestamp_ms, afr)

    def _append(self, provider: str, channel: str, unit: str, timestamp_ms: int, value: float) -> None:
        key = (provider, channel)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(unit, timestamp_ms)
        run.samples.append({"timestamp_ms": timestamp_ms, "value": float(value), "flags": 0})
        if len(run.samples) >= self.max_samples_per_batch:
            self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        run = self._runs.pop(key, None)
        if run is not None and run.samples:
            self._ready.append(self._record(key[0], key[1], run.unit, run.first_ms, "ok", run.samples))

    def _record(self, provider: str, channel: str, unit: str, first_ms: int, state: str,
                samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "batch_id": f"{SOURCE}:{self.station_id}:{provider}:{channel}:{first_ms}",
            "source": SOURCE,
            "station_id": self.station_id,
            "provider": provider,
            "run_id": self.run_id,
            "channel": channel,
            "unit": unit,
            "sensor_state": state,
            "samples": samples,
        }


# --- serial shell -----------------------------------------------------------------------------------------


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


# --- simulator --------------------------------------------------------------------------------------------


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
