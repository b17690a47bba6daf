"""WinPEP 8 / Power Core run files (.wp8): both known layouts, read as streams (contract: hardware-formats.md).

Both start with the magic FE CE FA CE; byte 4 selects the layout.

0x04, TLV layout (ECU logs): bytes 5-8 are the u32 LE length of the header section, which starts at byte 9.
    A TLV is tag u16 LE, length u32 LE, value. Header tags: 0x0001 ECU part number; 0x1000 a channel, whose
    sub-TLVs are 0x1001 name (NUL-terminated), 0x1101 source (1 ECU, 2 external AFR module), 0x1105 unit code,
    0x1106 unit sub-field, and a closing 0xFFFF of length 0; a 0xFFFF of length 0 outside a channel ends the
    header. The contract does not say whether a channel's sub-TLVs sit inside the 0x1000 value or follow a
    0x1000 of length 0; both are read. Then rows, each a TLV 0x1003: timestamp u32 LE (ms, often from ECU
    start, so it is made relative to the first row) and one f32 LE per channel in channel order. The TLV walk
    ends exactly at the end of the file; a last row cut short is a counted error at its offset (raised in
    strict mode), the rows before it are kept.

0x01, protocol-buffers layout (dyno runs), from byte 5: repeated field 1 is a channel block
    {1: metadata {1 module id, 2 sub-index, 4 channel id}, 2: name, 3: {1: unit code, 2: unit sub-field},
    4 (repeated): data point {1: float value, 2: varint time ms}, 7: device name, 8: category}; channels are
    stored column-wise, each at its own rate. Run-level fields: 3 notes, 10 software version, 11 firmware,
    15 dyno serial, 18 ECU part number, 19 run time (Windows FILETIME), 25 shop, 28 description,
    29 stoichiometric AFR (double; shown, never applied to values). Reading is two passes over the file, both
    streaming: the first walks the top level (seeking over channel blocks) to learn the run time, which
    protobuf writers put after the blocks; the second decodes one block at a time. Proto3 omits zero values,
    so a missing value or time is 0 (and a missing unit sub-field is sub-field 0). A file cut short keeps every
    channel block that is complete; the incomplete tail is a counted error at its byte offset (raised in
    strict mode).

Units: a channel declares its unit as a code (the quantity; not JetDrive's numbering) and a sub-field (the
unit within the quantity, e.g. mph or km/h). Only the (code, sub-field) pairs in UNITS, each known for
certain from real files, give a unit (and a conversion to the canonical one). Any other declaration keeps
the file's numbers unchanged under the unit `unknown(code=C,sub=S)`, with a warning per channel; a mapping
(files.load_mapping) names the unit of such a channel when its user knows it. Lambda versus AFR is decided
by the declared unit alone, never by the size of the values: "Air/Fuel Ratio" channels hold either.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from fleetstream.producers.file_parsing import (
    ChannelInfo,
    FileFormatError,
    FileSample,
    ParsedFile,
    ParseOptions,
    ParseStats,
    resolve_channel,
    unique_channels,
)
from fleetstream.schemas.units import unknown_unit

__all__ = [
    "EXTENSIONS",
    "FORMAT",
    "LAYOUT_DYNO_RUN",
    "LAYOUT_ECU_LOG",
    "MAGIC",
    "MODULES",
    "UNITS",
    "declared_unit",
    "filetime_to_ms",
    "parse",
    "sniff",
]

FORMAT = "wp8"
EXTENSIONS = (".wp8",)
MAGIC = b"\xfe\xce\xfa\xce"
LAYOUT_DYNO_RUN = 0x01
LAYOUT_ECU_LOG = 0x04

TAG_PART_NUMBER = 0x0001
TAG_CHANNEL = 0x1000
TAG_NAME = 0x1001
TAG_SOURCE = 0x1101
TAG_UNIT = 0x1105
TAG_UNIT_SUB = 0x1106
TAG_ROW = 0x1003
TAG_END = 0xFFFF
TLV_HEADER = struct.Struct("<HI")

# (unit code, unit sub-field) -> the unit the values are in; only pairs known for certain (issue 11, from a real
# Dynoware RT run (protobuf layout) and a real ECU log (TLV layout) read side by side). Everything else is
# unknown: code 11 sits on acceleration channels ("Accel 1", "Acceleration"), code 10 on "Humidity" (39.2),
# code 13 also on a lambda-valued channel ("afr", 0.775-1.259) whose sub-field the report does not give, and
# the report gives no (code, sub-field) for power, torque, force, engine speed, pressure or throttle channels
# (real runs held hp, ft-lb, mph, lbf values, but which pairs say so is not known).
UNITS: dict[tuple[int, int], str] = {
    # ECU log "Air Fuel Ratio 1/2": code 13, sub-tag 0x1106 = 1, values 10.4-30 at full load: AFR, not lambda.
    (13, 1): "AFR",
    # ECU "Coolant Temperature" 85-88 and "Intake Air Temperature" 38-45 at full load, sub-field 1: degC.
    # The code number 6 is inferred, not recorded: it is the former table's temperature code, and the report
    # names only the sub-field as missed for these channels (it names the code where the code was misread).
    (6, 1): "degC",
    # Speed: the dyno's "Speed 1" (sub-field 1) peaks at 67.98 in the run in which the ECU's "Vehicle Speed"
    # (sub-field 3) reads 116: mph and km/h. Code 2 is inferred as for temperature (the former speed code).
    (2, 1): "mph",
    (2, 3): "km/h",
}
MODULES: dict[int, str] = {17: "dyno CPU", 19: "wideband O2", 20: "atmospheric probe", 21: "retarder",
                           22: "pendant", 102: "vehicle ECU"}
ECU_SOURCES: dict[int, str] = {1: "ECU", 2: "external AFR module"}

# FILETIME counts 100 ns intervals from 1601-01-01 UTC.
_FILETIME_EPOCH_MS = 11_644_473_600_000
_MAX_MS = 7_258_118_400_000  # 2200-01-01: a later run time is a corrupt field, not a date

_RUN_TEXT_FIELDS: dict[int, str] = {3: "notes", 10: "software_version", 11: "firmware", 15: "dyno_serial",
                                    18: "ecu_part_number", 25: "shop", 28: "description"}


def sniff(head: bytes) -> bool:
    """True when the file starts with the WinPEP 8 magic."""
    return head.startswith(MAGIC)


def filetime_to_ms(filetime: int) -> int | None:
    """Windows FILETIME to ms since the Unix epoch; None for values outside 1970..2200 (unset or corrupt)."""
    ms = filetime // 10_000 - _FILETIME_EPOCH_MS
    return ms if 0 < ms < _MAX_MS else None


def declared_unit(code: int | None, sub: int | None) -> str:
    """The unit a channel declares: its UNITS entry, else `unknown(code=C,sub=S)` (values kept as in the file)."""
    if code is None:
        return unknown_unit("no unit code")
    if sub is None:
        return unknown_unit(f"code={code},no sub-field")
    return UNITS.get((code, sub)) or unknown_unit(f"code={code},sub={sub}")


def parse(handle: BinaryIO, options: ParseOptions) -> ParsedFile:
    """Check magic and layout byte, read the header (TLV) or the run-level fields (protobuf), stream samples."""
    head = handle.read(9)
    size = handle.seek(0, io.SEEK_END)
    label = options.label
    if len(head) < 5:
        raise FileFormatError(label, len(head), "a 5-byte WinPEP 8 preamble (magic FE CE FA CE, layout byte)",
                              f"end of file after {len(head)} bytes")
    if head[:4] != MAGIC:
        raise FileFormatError(label, 0, "magic FE CE FA CE (WinPEP 8 run file)", head[:4].hex(" ").upper())
    stats = ParseStats(label, options.strict)
    if head[4] == LAYOUT_ECU_LOG:
        return _TlvFile(handle, size, options, stats).parse()
    if head[4] == LAYOUT_DYNO_RUN:
        return _ProtoFile(handle, size, options, stats).parse()
    raise FileFormatError(label, 4, "layout byte 0x01 (dyno run, protocol buffers) or 0x04 (ECU log, TLV)",
                          f"0x{head[4]:02x}")


class _Truncated(FileFormatError):
    """Data that would run past `limit`, the end of the enclosing message: at the top level, of the file."""


def _read_exact(handle: BinaryIO, offset: int, count: int, limit: int, label: str, what: str) -> bytes:
    """`count` bytes at `offset`, or _Truncated if they would pass `limit` (end of file or of a message)."""
    if offset + count > limit:
        raise _Truncated(label, offset, f"{count} bytes of {what}",
                         f"{max(0, limit - offset)} before the end at byte {limit} (truncated)")
    handle.seek(offset)
    data = handle.read(count)
    if len(data) != count:
        raise _Truncated(label, offset, f"{count} bytes of {what}", f"{len(data)} (file truncated)")
    return data


# --- TLV layout -----------------------------------------------------------------------------------------------


@dataclass
class _TlvChannel:
    offset: int
    name: str = ""
    source: int | None = None
    unit_code: int | None = None
    unit_sub: int | None = None


class _TlvFile:
    """The ECU-log layout: a TLV header with the channel table, then fixed-size row TLVs to the end of the file."""

    def __init__(self, handle: BinaryIO, size: int, options: ParseOptions, stats: ParseStats):
        self.handle, self.size, self.options, self.stats = handle, size, options, stats
        self.label = options.label
        self.metadata: dict[str, str] = {"layout": "ECU log (TLV)"}

    def parse(self) -> ParsedFile:
        header_bytes = _read_exact(self.handle, 5, 4, self.size, self.label, "header length")
        (header_length,) = struct.unpack("<I", header_bytes)
        data_start = 9 + header_length
        if data_start > self.size:
            raise FileFormatError(self.label, 5, f"a header length of at most {self.size - 9} (file size)",
                                  str(header_length))
        raw = self._read_header(data_start)
        infos = [self._channel_info(channel) for channel in raw]
        channels = unique_channels(infos, self.stats)
        self.metadata["channels"] = str(len(raw))
        return ParsedFile(fmt=FORMAT, channels=[c for c in channels if c is not None],
                          samples=self._rows(data_start, channels), stats=self.stats, metadata=self.metadata)

    def _read_header(self, data_start: int) -> list[_TlvChannel]:
        channels: list[_TlvChannel] = []
        open_channel: _TlvChannel | None = None
        offset = 9
        while offset < data_start:
            tag, length = TLV_HEADER.unpack(_read_exact(self.handle, offset, 6, data_start, self.label,
                                                        "TLV header (tag, length)"))
            value_at = offset + 6
            if open_channel is not None and tag != TAG_CHANNEL:
                if tag == TAG_END:
                    open_channel = None
                else:
                    self._sub_tlv(open_channel, tag, length, value_at, data_start)
            elif tag == TAG_END:
                if value_at != data_start:
                    raise FileFormatError(self.label, offset, f"the header to end at byte {data_start} (header "
                                          "length at byte 5)", f"end tag at byte {offset}")
                return channels
            elif tag == TAG_PART_NUMBER:
                self.metadata["ecu_part_number"] = self._text(value_at, length, data_start, "ECU part number")
            elif tag == TAG_CHANNEL:
                channel = _TlvChannel(offset)
                channels.append(channel)
                if length == 0:
                    open_channel = channel
                else:
                    self._nested_channel(channel, value_at, value_at + length, data_start)
            else:
                raise FileFormatError(self.label, offset, "TLV tag 0x1000 or 0xFFFF (or 0x0001 part number)",
                                      f"0x{tag:04x}")
            offset = value_at + length
        raise FileFormatError(self.label, data_start, "TLV tag 0xFFFF ending the header", "the first data row")

    def _nested_channel(self, channel: _TlvChannel, start: int, end: int, data_start: int) -> None:
        if end > data_start:
            raise FileFormatError(self.label, channel.offset, f"a channel TLV ending by byte {data_start} (header "
                                  "end)", f"length reaching byte {end}")
        offset = start
        while offset < end:
            tag, length = TLV_HEADER.unpack(_read_exact(self.handle, offset, 6, end, self.label, "channel sub-TLV"))
            if tag == TAG_END:
                return
            self._sub_tlv(channel, tag, length, offset + 6, end)
            offset += 6 + length

    def _sub_tlv(self, channel: _TlvChannel, tag: int, length: int, value_at: int, limit: int) -> None:
        value = _read_exact(self.handle, value_at, length, limit, self.label, f"channel sub-TLV 0x{tag:04x}")
        if tag == TAG_NAME:
            channel.name = value.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        elif tag in (TAG_SOURCE, TAG_UNIT, TAG_UNIT_SUB) and 0 < length <= 8:
            number = int.from_bytes(value, "little")
            if tag == TAG_SOURCE:
                channel.source = number
            elif tag == TAG_UNIT:
                channel.unit_code = number
            else:
                channel.unit_sub = number
        # Other sub-tags are present in real files with unknown meaning: skipped.

    def _text(self, offset: int, length: int, limit: int, what: str) -> str:
        value = _read_exact(self.handle, offset, length, limit, self.label, what)
        return value.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()

    def _channel_info(self, channel: _TlvChannel) -> ChannelInfo | None:
        name = channel.name or f"channel {channel.offset}"
        unit = declared_unit(channel.unit_code, channel.unit_sub)
        device = ECU_SOURCES.get(channel.source or 0, "")
        return resolve_channel(name, unit, self.options, self.stats, device=device, position=channel.offset,
                               where="byte")

    def _rows(self, data_start: int, channels: list[ChannelInfo | None]) -> Iterator[FileSample]:
        row_length = 4 + 4 * len(channels)
        row_format = struct.Struct(f"<I{len(channels)}f")
        handle, offset, row = self.handle, data_start, 0
        first_ms: int | None = None
        handle.seek(offset)
        while offset < self.size:
            if self.size - offset < 6:
                self._cut_short(offset, row_length)
                return
            tag, length = TLV_HEADER.unpack(_read_exact(handle, offset, 6, self.size, self.label, "row TLV header"))
            if tag != TAG_ROW:
                raise FileFormatError(self.label, offset, "TLV tag 0x1003 (data row)", f"0x{tag:04x}")
            if length != row_length:
                raise FileFormatError(self.label, offset + 2, f"row length {row_length} (timestamp and "
                                      f"{len(channels)} floats)", str(length))
            if offset + 6 + length > self.size:
                self._cut_short(offset, row_length)
                return
            body = _read_exact(handle, offset + 6, length, self.size, self.label, "row data")
            timestamp_ms, *values = row_format.unpack(body)
            first_ms = timestamp_ms if first_ms is None else first_ms
            if timestamp_ms < first_ms:
                self.stats.row_error(offset + 6, f"a timestamp >= the first row's {first_ms} ms",
                                     f"{timestamp_ms} ms", "byte")
            else:
                yield from self._row_samples(row, timestamp_ms - first_ms, values, channels, offset + 10)
            self.stats.rows += 1
            row += 1
            offset += 6 + length

    def _cut_short(self, offset: int, row_length: int) -> None:
        """The file ends inside a row: the rows before it are kept, the tail is a counted error (strict: raised)."""
        self.stats.row_error(offset, f"a complete row ({6 + row_length} bytes: TLV header, timestamp and "
                             f"{(row_length - 4) // 4} floats)", f"{self.size - offset} bytes before the end of "
                             f"the file (cut short; the {self.stats.rows} rows before it are kept)", "byte")

    def _row_samples(self, row: int, relative_ms: int, values: list[float], channels: list[ChannelInfo | None],
                     values_at: int) -> Iterator[FileSample]:
        for position, (info, value) in enumerate(zip(channels, values, strict=True)):
            if info is None:
                continue
            if not math.isfinite(value):
                self.stats.row_error(values_at + 4 * position, f"a finite {info.channel} value", str(value), "byte")
                continue
            self.stats.samples += 1
            yield FileSample(row, info.channel, info.unit, relative_ms, info.convert(value))


# --- protocol-buffers layout ----------------------------------------------------------------------------------


class _Field(NamedTuple):
    """One protobuf field: number, wire type, where its value starts, the value (length for wire type 2), its end."""

    number: int
    wire_type: int
    offset: int
    value: int
    end: int


WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5


def _varint(handle: BinaryIO, offset: int, limit: int, label: str) -> tuple[int, int]:
    """A base-128 varint at `offset` (handle positioned there): (value, offset after it)."""
    result = shift = 0
    start = offset
    while True:
        if offset >= limit:
            raise _Truncated(label, start, "a complete varint", f"the end at byte {limit} (truncated)")
        byte = handle.read(1)
        if not byte:
            raise _Truncated(label, start, "a complete varint", "end of file (truncated)")
        result |= (byte[0] & 0x7F) << shift
        offset += 1
        if byte[0] < 0x80:
            return result, offset
        shift += 7
        if shift >= 70:
            raise FileFormatError(label, start, "a varint of at most 10 bytes", "a longer one")


def _fields(handle: BinaryIO, start: int, end: int, label: str) -> Iterator[_Field]:
    """Walk the fields of a message occupying bytes [start, end) of `handle`.

    Values of wire type 2 are not read: the walker seeks past them, so the caller may read the payload
    (at `field.offset`, `field.value` bytes) or ignore it. The walk must end exactly at `end`.
    """
    offset = start
    while offset < end:
        handle.seek(offset)
        key_at = offset
        key, offset = _varint(handle, offset, end, label)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise FileFormatError(label, key_at, "a protobuf field number >= 1", "0")
        if wire_type == WIRE_VARINT:
            value, after = _varint(handle, offset, end, label)
        elif wire_type in (WIRE_FIXED64, WIRE_FIXED32):
            width = 8 if wire_type == WIRE_FIXED64 else 4
            value = int.from_bytes(_read_exact(handle, offset, width, end, label, f"field {number}"), "little")
            after = offset + width
        elif wire_type == WIRE_LEN:
            value, offset = _varint(handle, offset, end, label)
            if offset + value > end:
                raise _Truncated(label, key_at, f"field {number} of {value} bytes within the message "
                                 f"(ends at byte {end})", f"{end - offset} bytes left (truncated)")
            after = offset + value
        else:
            raise FileFormatError(label, key_at, "protobuf wire type 0, 1, 2 or 5",
                                  f"wire type {wire_type} (field {number})")
        yield _Field(number, wire_type, offset, value, after)
        offset = after


def _submessage(handle: BinaryIO, item: _Field, label: str, what: str) -> Iterator[_Field]:
    """The fields of an embedded message, walked in place (offsets in errors stay file offsets)."""
    if item.wire_type != WIRE_LEN:
        raise FileFormatError(label, item.offset, f"{what} (length-delimited)", f"wire type {item.wire_type}")
    return _fields(handle, item.offset, item.offset + item.value, label)


def _as_float(item: _Field) -> float:
    if item.wire_type == WIRE_FIXED32:
        return float(struct.unpack("<f", item.value.to_bytes(4, "little"))[0])
    if item.wire_type == WIRE_FIXED64:
        return float(struct.unpack("<d", item.value.to_bytes(8, "little"))[0])
    return float(item.value)


def _as_text(handle: BinaryIO, item: _Field, label: str) -> str:
    if item.wire_type != WIRE_LEN:
        return str(item.value)
    data = _read_exact(handle, item.offset, item.value, item.offset + item.value, label, f"field {item.number}")
    return data.decode("utf-8", errors="replace")


@dataclass
class _Block:
    """A channel block's header, from the first pass over it."""

    offset: int
    end: int
    name: str = ""
    unit_code: int | None = None
    unit_sub: int = 0  # proto3: an absent sub-field is 0
    module_id: int = 0
    sub_index: int = 0
    channel_id: int = 0
    device: str = ""
    category: str = ""
    points: int = 0


@dataclass
class _Run:
    blocks: list[_Block] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=lambda: {"layout": "dyno run (protocol buffers)"})
    start_time_ms: int | None = None


class _ProtoFile:
    """The dyno-run layout: a protobuf message from byte 5 to the end of the file."""

    def __init__(self, handle: BinaryIO, size: int, options: ParseOptions, stats: ParseStats):
        self.handle, self.size, self.options, self.stats = handle, size, options, stats
        self.label = options.label

    def parse(self) -> ParsedFile:
        run = self._read_run()
        infos = unique_channels([self._channel_info(block) for block in run.blocks], self.stats)
        pairs = [(block, info) for block, info in zip(run.blocks, infos, strict=True) if info is not None]
        return ParsedFile(fmt=FORMAT, channels=[info for _, info in pairs], samples=self._samples(pairs),
                          stats=self.stats, start_time_ms=run.start_time_ms, metadata=run.metadata)

    def _read_run(self) -> _Run:
        """First pass: run-level fields, and the extent and header of every channel block.

        A top-level field running past the end of the file means the file was cut short: the blocks before it
        are complete and kept, the tail is a counted error (raised in strict mode). Any other fault is fatal.
        """
        run = _Run()
        walker = _fields(self.handle, 5, self.size, self.label)
        tail_at = 5
        while True:
            try:
                item = next(walker)
            except StopIteration:
                break
            except _Truncated as cut:
                self._cut_short(run, tail_at, cut)
                break
            self._run_field(run, item)
            tail_at = item.end
        run.metadata["channels"] = str(len(run.blocks))
        return run

    def _run_field(self, run: _Run, item: _Field) -> None:
        if item.number == 1:
            if item.wire_type != WIRE_LEN:
                raise FileFormatError(self.label, item.offset, "a channel block (field 1, length-delimited)",
                                      f"wire type {item.wire_type}")
            run.blocks.append(self._read_block(item))
        elif item.number in _RUN_TEXT_FIELDS:
            run.metadata[_RUN_TEXT_FIELDS[item.number]] = _as_text(self.handle, item, self.label)
        elif item.number == 19 and item.wire_type in (WIRE_VARINT, WIRE_FIXED64):
            run.start_time_ms = filetime_to_ms(item.value)
            if run.start_time_ms is None:
                self.stats.warn(item.offset, f"run time FILETIME {item.value} is not a date; not used", "byte")
        elif item.number == 29 and item.wire_type in (WIRE_FIXED64, WIRE_FIXED32):
            run.metadata["stoich_afr"] = f"{_as_float(item):g}"  # shown, never applied to values

    def _cut_short(self, run: _Run, tail_at: int, cut: _Truncated) -> None:
        """A top-level field runs past the end of the file: keep what came before, count the tail as an error."""
        self.stats.row_error(tail_at, "complete top-level fields to the end of the file",
                             f"{self.size - tail_at} bytes of an incomplete field (what it declares at byte "
                             f"{cut.position} runs past the end at byte {self.size}); the file looks cut short, "
                             f"the {len(run.blocks)} complete channel blocks before it are kept", "byte")

    def _read_block(self, block_field: _Field) -> _Block:
        block = _Block(offset=block_field.offset, end=block_field.offset + block_field.value)
        for item in _fields(self.handle, block.offset, block.end, self.label):
            if item.number == 4:
                block.points += 1
            elif item.number == 1:
                self._read_metadata(block, item)
            elif item.number == 2:
                block.name = _as_text(self.handle, item, self.label)
            elif item.number == 3:
                self._read_unit(block, item)
            elif item.number == 7:
                block.device = _as_text(self.handle, item, self.label)
            elif item.number == 8:
                block.category = _as_text(self.handle, item, self.label)
        return block

    def _read_unit(self, block: _Block, item: _Field) -> None:
        """Field 3: {1: unit code, 2: unit sub-field}; proto3 omits zeros, so an empty message is code 0, sub 0."""
        block.unit_code, block.unit_sub = 0, 0
        for sub in _submessage(self.handle, item, self.label, "unit message"):
            if sub.wire_type != WIRE_VARINT:
                continue
            if sub.number == 1:
                block.unit_code = sub.value
            elif sub.number == 2:
                block.unit_sub = sub.value

    def _read_metadata(self, block: _Block, item: _Field) -> None:
        for sub in _submessage(self.handle, item, self.label, "channel metadata"):
            if sub.wire_type != WIRE_VARINT:
                continue
            if sub.number == 1:
                block.module_id = sub.value
            elif sub.number == 2:
                block.sub_index = sub.value
            elif sub.number == 4:
                block.channel_id = sub.value

    def _channel_info(self, block: _Block) -> ChannelInfo | None:
        name = block.name or f"module {block.module_id} channel {block.channel_id}"
        unit = declared_unit(block.unit_code, block.unit_sub)
        device = block.device or MODULES.get(block.module_id, f"module {block.module_id}" if block.module_id else "")
        return resolve_channel(name, unit, self.options, self.stats, device=device, position=block.offset,
                               where="byte")

    def _samples(self, pairs: list[tuple[_Block, ChannelInfo]]) -> Iterator[FileSample]:
        """Second pass: each channel's data points, in file order; `row` is the point's index in its channel."""
        for block, info in pairs:
            point = 0
            for item in _fields(self.handle, block.offset, block.end, self.label):
                if item.number != 4:
                    continue
                time_ms, value = self._point(item)
                self.stats.rows += 1
                if not math.isfinite(value):
                    self.stats.row_error(item.offset, f"a finite {info.channel} value", str(value), "byte")
                else:
                    self.stats.samples += 1
                    yield FileSample(point, info.channel, info.unit, time_ms, info.convert(value))
                point += 1

    def _point(self, item: _Field) -> tuple[int, float]:
        """A data point {1: float value, 2: varint time ms}; absent fields are proto3 zeros."""
        time_ms, value = 0, 0.0
        for sub in _submessage(self.handle, item, self.label, "data point"):
            if sub.number == 1:
                value = _as_float(sub)
            elif sub.number == 2 and sub.wire_type == WIRE_VARINT:
                time_ms = sub.value
        return time_ms, value
