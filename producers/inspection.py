"""`fleetstream inspect`: what is in a capture or log file, before (or instead of) importing it.

One report shape for every source: format, identity (SHA-256), record count (rows, data points, packets),
channels with units, sample counts, value ranges and time spans, errors with their positions, and
format-specific counters. Inspectors are registered per format in a small registry, so capture formats
owned elsewhere plug in without this module knowing them:

    register_inspector("myformat", inspect_myformat, sniff=looks_like_myformat, extensions=(".myf",))

Registered here: pvlog, wp8 and csv (through the import parsers, non-strict: every bad row is listed, a
structural error ends the report with its offset), and jetdrive (pcap/pcapng captures of JetDrive UDP
traffic, through producers.pcap and producers.jetdrive.protocol), and mts (raw Innovate ISP2 serial
captures, through producers.innovate's decoder). Detection tries the registered sniffers first, then the
file-import detection (producers.files).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetstream.producers.files import SNIFF_BYTES, FileFormatError, Issue, ParseOptions, file_identity, parser_for

__all__ = [
    "ChannelSummary",
    "InspectReport",
    "Inspector",
    "inspect",
    "inspectors",
    "register_inspector",
]

ISSUES_SHOWN = 20


@dataclass
class ChannelSummary:
    """One channel as found in the file: canonical name and unit, where it came from, and what values it had."""

    channel: str
    unit: str
    source_name: str = ""
    file_unit: str = ""
    provider: str = ""
    samples: int = 0
    min: float | None = None
    max: float | None = None
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, timestamp_ms: int, value: float) -> None:
        """Account one sample (kept as running min/max/first/last, so inspection streams)."""
        self.samples += 1
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        self.first_ms = timestamp_ms if self.first_ms is None else min(self.first_ms, timestamp_ms)
        self.last_ms = timestamp_ms if self.last_ms is None else max(self.last_ms, timestamp_ms)


@dataclass
class InspectReport:
    """What `inspect` found; `to_text()` for people, `to_dict()` for JSON."""

    path: str
    format: str
    size_bytes: int
    file_id: str
    records: int = 0
    record_kind: str = "rows"
    channels: list[ChannelSummary] = field(default_factory=list)
    time_base: str = "ms from the start of the file"
    """What `first_ms`/`last_ms` count from: relative file time, or epoch ms for captures."""
    start_time_ms: int | None = None
    """Absolute start recorded in the file, if any (ms since the epoch)."""
    error_count: int = 0
    warning_count: int = 0
    issues: list[Issue] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Source columns or signals that an import would not send, with the reason in `issues`."""
    counters: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    fatal: str | None = None
    """The error that stopped reading, if one did: the report covers the file up to it."""

    @property
    def ok(self) -> bool:
        return self.fatal is None and self.error_count == 0

    @property
    def span_ms(self) -> tuple[int, int] | None:
        firsts = [c.first_ms for c in self.channels if c.first_ms is not None]
        lasts = [c.last_ms for c in self.channels if c.last_ms is not None]
        return (min(firsts), max(lasts)) if firsts and lasts else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["span_ms"] = list(self.span_ms) if self.span_ms else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [
            f"{self.path}: {self.format}, {self.size_bytes} bytes, sha256 {self.file_id}",
            f"  {self.records} {self.record_kind}, {sum(c.samples for c in self.channels)} samples, "
            f"{len(self.channels)} channels, {self.error_count} errors, {self.warning_count} warnings",
        ]
        lines += [f"  {key}: {value}" for key, value in self.metadata.items()]
        if self.start_time_ms is not None:
            lines.append(f"  start time: {_iso(self.start_time_ms)} (recorded in the file)")
        if self.span_ms is not None:
            lines.append(f"  time span: {self.span_ms[0]}..{self.span_ms[1]} ({self.time_base}), "
                         f"{(self.span_ms[1] - self.span_ms[0]) / 1000:.3f} s")
        lines += [f"  {key}: {value}" for key, value in sorted(self.counters.items())]
        lines += self._channel_lines()
        if self.skipped:
            lines.append(f"  not imported: {', '.join(self.skipped)}")
        lines += [f"  {'error' if issue.error else 'note'} at {issue.where}: {issue.message}"
                  for issue in self.issues[:ISSUES_SHOWN]]
        if len(self.issues) > ISSUES_SHOWN:
            lines.append(f"  ... {len(self.issues) - ISSUES_SHOWN} more issues (see to_dict)")
        if self.fatal:
            lines.append(f"  STOPPED: {self.fatal}")
        return "\n".join(lines)

    def _channel_lines(self) -> list[str]:
        if not self.channels:
            return []
        rows = [("channel", "unit", "samples", "min", "max", "first_ms", "last_ms", "source")]
        for c in self.channels:
            source = " / ".join(part for part in (c.provider, c.source_name) if part)
            if c.file_unit and c.file_unit != c.unit:
                source += f" [{c.file_unit}]"
            rows.append((c.channel, c.unit, str(c.samples), _num(c.min), _num(c.max), _num(c.first_ms),
                         _num(c.last_ms), source))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                for row in rows]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:g}"


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


Inspector = Callable[[Path], InspectReport]
Sniffer = Callable[[bytes], bool]


@dataclass(frozen=True)
class _Registration:
    inspector: Inspector
    sniff: Sniffer | None
    extensions: tuple[str, ...]


_REGISTRY: dict[str, _Registration] = {}


def register_inspector(fmt: str, inspector: Inspector, *, sniff: Sniffer | None = None,
                       extensions: tuple[str, ...] = ()) -> None:
    """Add (or replace) the inspector of a format; `sniff(head)` gets the first 4 KiB for auto-detection."""
    _REGISTRY[fmt] = _Registration(inspector, sniff, tuple(ext.lower() for ext in extensions))


def inspectors() -> list[str]:
    """Formats `inspect` knows, in detection order."""
    return list(_REGISTRY)


def inspect(path: str | os.PathLike[str], fmt: str = "auto") -> InspectReport:
    """Inspect one file: detected (or given) format, counts, channels, ranges, time span, errors, identity."""
    location = Path(path)
    name = _detect(location) if fmt == "auto" else fmt
    if name not in _REGISTRY:
        raise ValueError(f"no inspector for format {name!r}; known: auto, {', '.join(_REGISTRY)}")
    return _REGISTRY[name].inspector(location)


def _detect(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    for fmt, registration in _REGISTRY.items():
        if registration.sniff is not None and registration.sniff(head):
            return fmt
    suffix = path.suffix.lower()
    for fmt, registration in _REGISTRY.items():
        if registration.sniff is None:
            continue  # the file-import formats: producers.files decides, content first
        if suffix in registration.extensions:
            return fmt
    try:
        return parser_for(path).FORMAT
    except FileFormatError as exc:
        raise FileFormatError(path, 0, f"one of the formats inspect knows ({', '.join(_REGISTRY)})", exc.found,
                              hint=_unrecognised_hint(head)) from None


def _unrecognised_hint(head: bytes) -> str:
    if looks_byte_swapped_mts(head):
        return ("it looks like an Innovate MTS capture with the two bytes of every 16-bit word swapped; ISP2 words "
                "are big-endian as read from the serial line: swap them back (e.g. `dd conv=swab`)")
    return "--format names the format when the content does not say it"


# --- the file-import formats ----------------------------------------------------------------------------------


def _inspect_import_format(fmt: str) -> Inspector:
    def inspector(path: Path) -> InspectReport:
        return inspect_import_file(path, fmt)

    return inspector


def inspect_import_file(path: Path, fmt: str = "auto") -> InspectReport:
    """Run the import parser without sending anything, accounting every sample; never strict."""
    parser = parser_for(path, fmt)
    report = InspectReport(path=str(path), format=parser.FORMAT, size_bytes=path.stat().st_size,
                           file_id=file_identity(path))
    report.record_kind = "data points" if parser.FORMAT == "wp8" else "rows"
    with open(path, "rb") as handle:
        try:
            parsed = parser.parse(handle, ParseOptions(label=str(path)))
        except FileFormatError as exc:
            report.fatal = str(exc)
            return report
        report.metadata, report.start_time_ms = parsed.metadata, parsed.start_time_ms
        if parsed.metadata.get("layout", "").startswith("ECU"):
            report.record_kind = "rows"
        summaries = {info.channel: ChannelSummary(info.channel, info.unit, info.source_name, info.file_unit,
                                                  info.device) for info in parsed.channels}
        report.channels = list(summaries.values())
        try:
            for sample in parsed.samples:
                summaries[sample.channel].add(sample.timestamp_ms, sample.value)
        except FileFormatError as exc:
            report.fatal = str(exc)
        stats = parsed.stats
        report.records, report.error_count, report.warning_count = stats.rows, stats.errors, stats.warnings
        report.issues, report.skipped = list(stats.issues), list(stats.skipped_columns)
    return report


for _fmt in ("wp8", "pvlog", "csv"):
    register_inspector(_fmt, _inspect_import_format(_fmt))


# --- JetDrive captures ----------------------------------------------------------------------------------------

PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")


def looks_like_pcap(head: bytes) -> bool:
    """pcap (either byte order, µs or ns) or pcapng, by magic number."""
    return head[:4] in PCAP_MAGICS


@dataclass
class _HostState:
    name: str = ""
    last_sequence: int | None = None


def inspect_jetdrive_capture(path: Path, port: int | None = None) -> InspectReport:
    """A pcap/pcapng of JetDrive traffic: datagrams, providers, channels with units and ranges, sequence gaps.

    Channels are keyed by (host, channel id), as the protocol requires; values before a host's ChannelInfo
    are counted as `values_without_channel_info`. Times are the capture's (epoch ms). `port` None means the
    JetDrive default port.
    """
    from fleetstream.producers.jetdrive.protocol import DEFAULT_PORT, ChannelInfo, ChannelValues, decode_datagram
    from fleetstream.producers.pcap import CaptureStats, PcapFormatError, read_udp_payloads

    report = InspectReport(path=str(path), format="jetdrive", size_bytes=path.stat().st_size,
                           file_id=file_identity(path), record_kind="datagrams", time_base="capture time, epoch ms")
    counters: Counter[str] = Counter()
    hosts: dict[int, _HostState] = {}
    channels: dict[tuple[int, int], ChannelSummary] = {}
    capture = CaptureStats()
    try:
        for index, datagram in enumerate(read_udp_payloads(path, port or DEFAULT_PORT, capture)):
            report.records += 1
            messages, errors = decode_datagram(datagram.payload)
            for error in errors:
                report.error_count += 1
                counters[f"frame_error.{error.reason}"] += 1
                _keep(report, Issue(f"datagram {index} byte {error.offset}", str(error)))
            for message in messages:
                counters[f"messages.{type(message.body).__name__}"] += 1
                host = hosts.setdefault(message.host, _HostState())
                _track_sequence(host, message.sequence, counters)
                if isinstance(message.body, ChannelInfo):
                    host.name = message.body.provider_name
                    _define_channels(message.host, message.body, channels)
                elif isinstance(message.body, ChannelValues):
                    _account_values(message.host, message.body, datagram.timestamp_ms, channels, counters)
    except PcapFormatError as exc:
        report.fatal = str(exc)
    counters["packets"] = capture.packets
    counters.update({f"skipped.{reason}": count for reason, count in capture.skipped.items()})
    report.counters = dict(counters)
    report.metadata = {f"provider 0x{host_id:04x}": state.name or "(no ChannelInfo seen)"
                       for host_id, state in sorted(hosts.items())}
    for (host_id, _), summary in channels.items():
        summary.provider = f"{hosts[host_id].name or 'host'} (0x{host_id:04x})"
    report.channels = [summary for summary in channels.values() if summary.samples or summary.unit]
    return report


def _keep(report: InspectReport, issue: Issue) -> None:
    if len(report.issues) < 200:
        report.issues.append(issue)


def _track_sequence(host: _HostState, sequence: int, counters: Counter[str]) -> None:
    """Sequence numbers wrap at 256: a jump forward is lost datagrams, a step back is reordering."""
    if host.last_sequence is not None:
        step = (sequence - host.last_sequence) % 256
        if step == 0:
            counters["sequence_repeats"] += 1
        elif step > 128:
            counters["sequence_out_of_order"] += 1
        elif step > 1:
            counters["sequence_gaps"] += 1
            counters["datagrams_missing"] += step - 1
    host.last_sequence = sequence


def _define_channels(host: int, info: Any, channels: dict[tuple[int, int], ChannelSummary]) -> None:
    from fleetstream.producers.jetdrive.decoder import canonical_channel_name, unit_spelling
    from fleetstream.schemas.units import UnknownUnitError, canonical_unit, unknown_unit

    for definition in info.channels:
        file_unit = unit_spelling(definition.unit_code) or unknown_unit(f"jetdrive unit {definition.unit_code}")
        try:
            unit = canonical_unit(file_unit)
        except UnknownUnitError:
            unit = file_unit
        key = (host, definition.channel_id)
        previous = channels.get(key)
        summary = ChannelSummary(canonical_channel_name(definition.name, definition.channel_id), unit,
                                 definition.name, file_unit)
        if previous is not None:
            summary.samples, summary.min, summary.max = previous.samples, previous.min, previous.max
            summary.first_ms, summary.last_ms = previous.first_ms, previous.last_ms
        channels[key] = summary


def _account_values(host: int, values: Any, capture_ms: int, channels: dict[tuple[int, int], ChannelSummary],
                    counters: Counter[str]) -> None:
    from fleetstream.schemas.units import UnknownUnitError, to_canonical

    for value in values.values:
        summary = channels.get((host, value.channel_id))
        if summary is None:
            counters["values_without_channel_info"] += 1
            continue
        try:
            converted = to_canonical(value.value, summary.file_unit)[0]
        except UnknownUnitError:
            converted = value.value
        summary.add(capture_ms, converted)


register_inspector("jetdrive", inspect_jetdrive_capture, sniff=looks_like_pcap, extensions=(".pcap", ".pcapng"))


# --- Innovate MTS (ISP2) serial captures ----------------------------------------------------------------------

_MTS_HEADER_MASK = 0xA280
MTS_READ_BYTES = 1 << 16


MTS_SNIFF_NEAR = 64
"""Junk allowed before three chained packets; further in, a longer chain is needed to call it a capture."""
MTS_SNIFF_PACKETS, MTS_SNIFF_PACKETS_FAR = 3, 8


def looks_like_mts(head: bytes) -> bool:
    """Well-formed ISP2 packets in a row, each where the previous one's length says (junk before them allowed).

    Raw serial captures have no magic number; the header marker bits, the length chain and payload words that
    decode are the signature. Three packets suffice within the first 64 bytes; a capture that starts after more
    junk (a logger that ran before the chain did) needs eight, which random bytes do not produce by chance.
    """
    for start in range(max(len(head) - 1, 0)):
        need = MTS_SNIFF_PACKETS if start < MTS_SNIFF_NEAR else MTS_SNIFF_PACKETS_FAR
        if _chained_packets(head, start, need) >= need:
            return True
    return False


def looks_byte_swapped_mts(head: bytes) -> bool:
    """True when `head` is not ISP2 but becomes ISP2 with the bytes of each 16-bit word swapped (either alignment)."""
    return not looks_like_mts(head) and any(looks_like_mts(_swab(head[shift:])) for shift in (0, 1))


def _swab(data: bytes) -> bytes:
    swapped = bytearray(data[: len(data) // 2 * 2])
    swapped[0::2], swapped[1::2] = data[1: len(swapped): 2], data[0: len(swapped): 2]
    return bytes(swapped)


def _chained_packets(head: bytes, start: int, limit: int) -> int:
    """How many complete packets (up to `limit`) follow each other from `start`, each payload decodable."""
    from fleetstream.producers.innovate import InnovateFormatError, decode_payload

    position, packets = start, 0
    while packets < limit and position + 1 < len(head):
        word = head[position] << 8 | head[position + 1]
        if word & _MTS_HEADER_MASK != _MTS_HEADER_MASK:
            break
        n_words = ((word >> 1) & 0x80) | (word & 0x7F)
        end = position + 2 + 2 * n_words
        if end > len(head):
            break
        payload = [head[i] << 8 | head[i + 1] for i in range(position + 2, end, 2)]
        if any(w & 0x0080 for w in payload):  # only a header word has bit 7 set
            break
        if word & 0x1000:  # a data packet: its sub-packets must decode
            try:
                decode_payload(payload)
            except InnovateFormatError:
                break
        position, packets = end, packets + 1
    return packets


TEXT_TAIL_BYTES = 4096
"""A capture may end with a line its logger wrote (`--- Logging Stopped ---`); longer tails are not such a line."""
MTS_RUN_PACKETS = 3
"""Packets back to back that mark where the capture really begins (junk can hold a packet look-alike or two)."""
MTS_ISSUES_SORTED = 10_000
"""Issues kept by position for sorting into notes; past that, the rest stay errors (a capture that broken is)."""


def inspect_mts_capture(path: Path) -> InspectReport:
    """A raw ISP2 byte capture: packets, function codes per sensor, lambda/AFR ranges, aux ranges, resyncs, errors.

    Captures carry no timestamps: times are packet index x 81.92 ms (the chain head's period). Aux values are
    the raw 13-bit words (their scaling is a per-installation setting). Junk before the capture's first run of
    packets is where logging started mid-stream, and a text line after the last packet is the logger's own note:
    both are reported as notes, not errors. Everything else the decoder finds stays an error.
    """
    from fleetstream.producers.innovate import DecodeIssue, InnovateDecoder

    report = InspectReport(path=str(path), format="mts", size_bytes=path.stat().st_size,
                           file_id=file_identity(path), record_kind="packets",
                           time_base="packet index x 81.92 ms (captures carry no time)")
    issues: list[DecodeIssue] = []

    def keep(issue: DecodeIssue) -> None:
        if len(issues) < MTS_ISSUES_SORTED:
            issues.append(issue)

    decoder = InnovateDecoder(on_issue=keep)
    start, last_end = _account_mts_packets(path, decoder, report)
    counters = decoder.counters
    report.records = counters.packets
    report.counters = {**report.counters, "data_packets": counters.data_packets,
                       "reply_packets": counters.reply_packets, "device_infos": counters.device_infos,
                       "resyncs": counters.resyncs, "skipped_bytes": counters.skipped_bytes,
                       "dropped_bytes": counters.dropped_bytes,
                       **{f"error.{reason}": count for reason, count in counters.errors.items()}}
    notes, covered = _mts_notes(path, issues, start, last_end, overflow=len(issues) >= MTS_ISSUES_SORTED)
    report.error_count = sum(counters.errors.values()) - len(covered)
    report.warning_count = len(notes)
    report.issues = [*notes, *(Issue(f"byte {issue.offset}", f"{issue.reason}: {issue.detail}")
                               for issue in counters.recent_issues if id(issue) not in covered)]
    if counters.data_packets == 0:
        with open(path, "rb") as handle:
            if looks_byte_swapped_mts(handle.read(SNIFF_BYTES)):
                report.fatal = ("no ISP2 packets, but the bytes read as ISP2 with the two bytes of every 16-bit word "
                                "swapped: swap them back (e.g. `dd conv=swab`)")
    return report


def _account_mts_packets(path: Path, decoder: Any, report: InspectReport) -> tuple[int | None, int]:
    """Decode the capture into `report`'s channels and function counters. Returns where the first run of
    MTS_RUN_PACKETS packets back to back starts (None: there is none) and where the last packet ends."""
    from fleetstream.producers.innovate import PACKET_INTERVAL_MS

    summaries: dict[str, ChannelSummary] = {}
    functions: Counter[str] = Counter()
    data_packets, last_end = 0, 0
    run_start, run_length, start = 0, 0, None

    def summary(channel: str, unit: str, source: str) -> ChannelSummary:
        return summaries.setdefault(channel, ChannelSummary(channel, unit, source))

    with open(path, "rb") as handle:
        while chunk := handle.read(MTS_READ_BYTES):
            for packet in decoder.feed(chunk):
                if start is None:
                    contiguous = run_length > 0 and packet.offset == last_end
                    run_start, run_length = (run_start, run_length + 1) if contiguous else (packet.offset, 1)
                    start = run_start if run_length >= MTS_RUN_PACKETS else None
                last_end = packet.offset + packet.size_bytes
                if packet.kind != "data":
                    continue
                time_ms = round(data_packets * PACKET_INTERVAL_MS)
                data_packets += 1
                for index, sensor in enumerate(packet.sensors):
                    suffix = "" if index == 0 else f"_{index + 1}"
                    functions[f"sensor{index + 1}.function.{sensor.function_code}.{sensor.state_label}"] += 1
                    if sensor.lambda_value is not None:
                        summary(f"lambda{suffix}", "lambda", f"{sensor.device} {index + 1}").add(
                            time_ms, sensor.lambda_value)
                    if sensor.afr is not None:
                        summary(f"afr{suffix}", "AFR", f"{sensor.device} {index + 1}").add(time_ms, sensor.afr)
                for index, value in enumerate(packet.aux):
                    summary(f"aux_{index + 1}", "", f"aux word {index + 1} (raw)").add(time_ms, float(value))
        decoder.finish()
    report.channels = list(summaries.values())
    report.counters = dict(functions)
    return start, last_end


def _mts_notes(path: Path, issues: list[Any], start: int | None, last_end: int,
               overflow: bool) -> tuple[list[Issue], set[int]]:
    """Notes for the junk before the capture's first run of packets and for a text line after the last packet,
    and the ids of the decoder issues they stand for (which then are not errors)."""
    if start is None:
        return [], set()  # never a run of packets: the junk is all there is
    notes: list[Issue] = []
    leading = [issue for issue in issues if issue.offset < start]
    if leading:
        notes.append(Issue("byte 0", f"junk: {start} bytes before the first packet skipped (the capture started "
                                     "mid-stream)", error=False))
    trailing = [issue for issue in issues if issue.offset >= last_end]
    tail = _text_tail(path, last_end) if trailing and not overflow else None
    if tail is not None:
        notes.append(Issue(f"byte {last_end}", f"junk: a text line after the last packet, not ISP2: {tail!r}",
                           error=False))
    return notes, {id(issue) for issue in leading} | ({id(issue) for issue in trailing} if tail else set())


def _text_tail(path: Path, last_end: int) -> str | None:
    """The bytes after the last packet as one line of text, if that is what they are (and short)."""
    size = path.stat().st_size - last_end
    if not 0 < size <= TEXT_TAIL_BYTES:
        return None
    with open(path, "rb") as handle:
        handle.seek(last_end)
        tail = handle.read()
    return " ".join(tail.decode("ascii").split())[:120] if _is_text(tail) else None


def _is_text(data: bytes) -> bool:
    return bool(data.strip()) and all(0x20 <= b < 0x7F or b in b"\r\n\t" for b in data)


register_inspector("mts", inspect_mts_capture, sniff=looks_like_mts, extensions=(".isp2", ".mts"))
