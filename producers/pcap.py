"""Read UDP payloads out of packet captures (pcap and pcapng), e.g. a JetDrive session for `fleetstream inspect`.

Parsing is dpkt's (pure Python, no libpcap): its readers walk the file, its protocol classes peel the link
layer, IP and UDP. This module adds what a replay needs on top: the link types met in practice (Ethernet,
Linux cooked v1/v2, raw IP, BSD loopback), a filter on the destination port, timestamps in epoch ms, and
accounting: every packet that is not a matching UDP payload is counted with a reason instead of being
silently skipped. A pcapng file's link type is taken from its first interface.

`write_udp_pcap` builds a classic pcap of Ethernet/IPv4/UDP frames from payloads: fixtures are made from
a simulator's datagrams with it (see tests/data/jetdrive/README.md).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import dpkt

from fleetstream.errors import FleetstreamError
from fleetstream.producers.jetdrive.protocol import DEFAULT_PORT

__all__ = ["CaptureStats", "PcapFormatError", "UdpPayload", "read_udp_payloads", "write_udp_pcap"]

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_DAMAGED = (dpkt.NeedData, dpkt.UnpackError, ValueError, struct.error)  # what dpkt raises on cut or corrupt bytes

# link type -> how to get from a frame to its network-layer packet
_LINK_PARSERS: dict[int, Any] = {
    1: lambda buf: dpkt.ethernet.Ethernet(buf).data,  # Ethernet (VLAN tags handled by dpkt)
    113: lambda buf: dpkt.sll.SLL(buf).data,  # Linux cooked capture ("any" interface)
    276: lambda buf: dpkt.sll2.SLL2(buf).data,  # Linux cooked capture v2
    0: lambda buf: dpkt.loopback.Loopback(buf).data,  # BSD loopback
    108: lambda buf: dpkt.loopback.Loopback(buf).data,  # OpenBSD loopback
    **{raw: (lambda buf: _raw_ip(buf)) for raw in (12, 14, 101, 228, 229)},  # raw IP (v4/v6)
}


class PcapFormatError(FleetstreamError, ValueError):
    """The file is not a capture this reader understands; the message names the file and what was found."""


@dataclass(frozen=True, slots=True)
class UdpPayload:
    """One UDP datagram from a capture, with the capture's timestamp in epoch ms."""

    timestamp_ms: int
    src: str
    src_port: int
    dst: str
    dst_port: int
    payload: bytes


@dataclass
class CaptureStats:
    """What the reader saw: packets read, payloads yielded, and skipped packets by reason."""

    packets: int = 0
    payloads: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def read_udp_payloads(source: str | Path | BinaryIO, port: int | None = DEFAULT_PORT,
                      stats: CaptureStats | None = None) -> Iterator[UdpPayload]:
    """UDP payloads sent to `port` (any port if None), in capture order; pcap or pcapng by magic number.

    Raises PcapFormatError for a file that is neither. A truncated file ends the iteration, counted
    as `truncated_file` in `stats`.
    """
    stats = stats if stats is not None else CaptureStats()
    if isinstance(source, str | Path):
        with open(source, "rb") as fileobj:
            yield from _read(fileobj, str(source), port, stats)
    else:
        yield from _read(source, getattr(source, "name", "<stream>"), port, stats)


def _read(fileobj: BinaryIO, name: str, port: int | None, stats: CaptureStats) -> Iterator[UdpPayload]:
    reader = _open_reader(fileobj, name)
    parse_link = _LINK_PARSERS.get(reader.datalink())
    if parse_link is None:
        raise PcapFormatError(f"{name}: link type {reader.datalink()} is not supported; "
                              f"supported: {sorted(_LINK_PARSERS)}")
    try:
        for timestamp_s, frame in reader:
            stats.packets += 1
            payload = _udp_payload(parse_link, frame, timestamp_s, port, stats)
            if payload is not None:
                stats.payloads += 1
                yield payload
    except _DAMAGED:  # a record header cut off by the end of the file, or corrupt
        stats.skipped["truncated_file"] += 1


def _open_reader(fileobj: BinaryIO, name: str) -> Any:
    magic = fileobj.read(4)
    fileobj.seek(-len(magic), 1)
    try:
        if magic in _PCAP_MAGICS:
            return dpkt.pcap.Reader(fileobj)
        if magic == _PCAPNG_MAGIC:
            return dpkt.pcapng.Reader(fileobj)
    except _DAMAGED as exc:
        raise PcapFormatError(f"{name}: unreadable capture header: {exc}") from exc
    raise PcapFormatError(f"{name}: not a pcap or pcapng file (starts with {magic.hex() or 'nothing'}, "
                          f"expected {sorted(m.hex() for m in _PCAP_MAGICS)} or {_PCAPNG_MAGIC.hex()})")


def _udp_payload(parse_link: Any, frame: bytes, timestamp_s: float, port: int | None,
                 stats: CaptureStats) -> UdpPayload | None:
    try:
        packet = parse_link(frame)
    except _DAMAGED:
        stats.skipped["truncated_frame"] += 1
        return None
    if isinstance(packet, bytes):  # dpkt leaves what it could not parse (a frame cut short) as raw bytes
        stats.skipped["unparsed_frame"] += 1
        return None
    if isinstance(packet, dpkt.ip.IP):
        if packet.offset or packet.mf:  # JetDrive keeps datagrams under the MTU; reassembly is out of scope
            stats.skipped["ip_fragment"] += 1
            return None
        src, dst, family = packet.src, packet.dst, socket.AF_INET
    elif isinstance(packet, dpkt.ip6.IP6):
        src, dst, family = packet.src, packet.dst, socket.AF_INET6
    else:
        stats.skipped["not_ip"] += 1
        return None
    udp = packet.data
    if not isinstance(udp, dpkt.udp.UDP):
        stats.skipped["not_udp"] += 1
        return None
    if port is not None and udp.dport != port:
        stats.skipped["other_port"] += 1
        return None
    return UdpPayload(round(timestamp_s * 1000), socket.inet_ntop(family, src), udp.sport,
                      socket.inet_ntop(family, dst), udp.dport, bytes(udp.data))


def _raw_ip(buf: bytes) -> Any:
    version = buf[0] >> 4 if buf else 0
    if version == 6:
        return dpkt.ip6.IP6(buf)
    return dpkt.ip.IP(buf)


def write_udp_pcap(fileobj: BinaryIO, datagrams: Iterable[tuple[int, bytes]], *, src: str = "192.0.2.10",
                   dst: str = "224.0.2.10", src_port: int = DEFAULT_PORT, dst_port: int = DEFAULT_PORT,
                   pcapng: bool = False) -> int:
    """Write (epoch ms, payload) pairs as Ethernet/IPv4/UDP frames; returns the number of packets written."""
    writer: Any = dpkt.pcapng.Writer(fileobj) if pcapng else dpkt.pcap.Writer(fileobj)
    count = 0
    for timestamp_ms, payload in datagrams:
        udp = dpkt.udp.UDP(sport=src_port, dport=dst_port, data=payload)
        udp.ulen = len(udp)
        ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_UDP, ttl=1, data=udp)
        frame = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=_multicast_mac(dst),
                                       type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        writer.writepkt(bytes(frame), ts=timestamp_ms / 1000)
        count += 1
    return count


def _multicast_mac(address: str) -> bytes:
    """The Ethernet address an IPv4 group maps to (01:00:5e + low 23 bits); unicast gets a fixed local one."""
    raw = socket.inet_aton(address)
    if 224 <= raw[0] <= 239:
        return b"\x01\x00\x5e" + bytes([raw[1] & 0x7F]) + raw[2:]
    return b"\x02\x00\x00\x00\x00\x02"
