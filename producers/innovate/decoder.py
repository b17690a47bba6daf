"""The streaming ISP2 decoder: bytes in any chunking, packets out, resynchronising on damage (pure).

Timestamps: the chain gives none. The reader stamps each packet with the epoch ms at which the read that
completed it returned; when one read completes several packets (the OS buffered a burst), the last gets the
receive time and each earlier one 81.92 ms less, the chain's cadence, so a burst is spread back over the time
it really took to send. Stamps never go backwards: a stamp at or before the previous one becomes previous + 1.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetstream.producers.innovate.protocol import (
    DATA_BIT,
    DEVICE_INFO_BYTES,
    DEVICE_INFO_WAIT_PACKETS,
    HEADER_MASK,
    PACKET_INTERVAL_MS,
    InnovateFormatError,
    Packet,
    decode_payload,
    parse_device_info,
    unpack8,
)

__all__ = [
    "DecodeIssue",
    "DecoderCounters",
    "InnovateDecoder",
    "stamp_burst",
]

log = logging.getLogger(__name__)


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
    return ((high << 8) | low) & HEADER_MASK == HEADER_MASK


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
        n_words = unpack8(header)
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
        if not header & DATA_BIT:
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
