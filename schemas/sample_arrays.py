"""Vectorised Avro encoding and decoding of a signal batch's samples array: the pipeline's hottest bytes.

fastavro writes one `SignalSample` in about 1.8 µs and reads one in 1.5 µs (two unions per sample), a message
carries 100 of them, and every message is encoded twice and decoded three times on its way to ClickHouse
(device, validation, analytics, sink): encoding was 90 % of the edge produce path (`fleetstream bench produce`)
and decoding the largest item in the worker's and the sink's profiles. The common sample, numeric with no
string value and small flags, is one fixed-width row: the timestamp's zig-zag varint (the same width for every
sample of a batch), union branch 1, the little-endian double, the null `svalue` branch and the flags varint.
Such arrays are laid out and read with numpy; the bytes are exactly fastavro's (`tests/schemas/
test_sample_arrays.py` compares both directions), and anything else returns None and takes fastavro.

Later schema versions may append optional fields to the sample (`["null", ...]` with a null default, such as
v3's `time_text`): the schema's `sample_tail` names them, and a row whose tail fields are all null is the
same fixed-width row plus one zero byte (the null branch) per tail field.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["decode_columns", "decode_samples", "encode_columns", "encode_samples", "sample_tail", "writes_samples_of"]

_SAMPLE_FIELDS = (("timestamp_ms", "long"), ("value", ["null", "double"]), ("svalue", ["null", "string"]),
                  ("flags", "int"))
_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_LOW7 = np.uint64(0x7F)
_CONTINUE = [np.array([0x80] * (width - 1) + [0], np.uint8) for width in range(1, 11)]
_MAX_FLAGS = 63  # zig-zag encodes 0..63 in one byte
_INT = {int}  # not bool: fastavro rejects a bool value
_NUMBER = {int, float}


def writes_samples_of(schema: dict[str, Any]) -> bool:
    """Whether `encode_samples` can write this record schema's samples: its last field is the samples array of
    the SignalSample layout above (checked on the raw schema, so a new schema version cannot be mis-encoded)."""
    return sample_tail(schema) is not None


def sample_tail(schema: dict[str, Any]) -> tuple[str, ...] | None:
    """The optional fields after `flags` in this record schema's SignalSample layout (none up to v2), or None
    when its samples are not that layout. A tail field must be a `["null", ...]` union defaulting to null."""
    fields = schema.get("fields") or []
    if not fields or fields[-1]["name"] != "samples":
        return None
    items = fields[-1]["type"].get("items") if isinstance(fields[-1]["type"], dict) else None
    if not isinstance(items, dict) or items.get("type") != "record":
        return None
    layout = items["fields"]
    if tuple((f["name"], f["type"]) for f in layout[:len(_SAMPLE_FIELDS)]) != _SAMPLE_FIELDS:
        return None
    tail = layout[len(_SAMPLE_FIELDS):]
    if not all(isinstance(f["type"], list) and f["type"][:1] == ["null"] and "default" in f and f["default"] is None
               for f in tail):
        return None
    return tuple(f["name"] for f in tail)


def _varint(n: int) -> bytes:
    """Avro `long`: zig-zag, then 7 bits per byte, low first (the array's block count)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _width(z: int) -> int:
    return max(1, (z.bit_length() + 6) // 7)


def encode_samples(samples: Sequence[dict[str, Any]], tail: Sequence[str] = ()) -> bytes | None:
    """The Avro array encoding of `samples`, or None when a sample needs the general writer (a string or null
    value, flags beyond 0..63, a missing field, a tail field that is set, or timestamps whose varints differ in
    length). `tail`: the layout's optional fields after `flags` (`sample_tail`)."""
    n = len(samples)
    try:  # map and count run in C, about twice as fast as a generator over the samples
        if any(list(map(dict.get, samples, repeat(name))).count(None) != n for name in ("svalue", *tail)):
            return None
    except TypeError:  # not dicts
        return None
    try:
        timestamps = [s["timestamp_ms"] for s in samples]
        values = [s["value"] for s in samples]
    except KeyError:
        return None
    flags = [s.get("flags", 0) for s in samples]
    if (n == 0 or not set(map(type, timestamps)) <= _INT or not set(map(type, values)) <= _NUMBER
            or not set(map(type, flags)) <= _INT or min(flags) < 0 or max(flags) > _MAX_FLAGS):
        return None
    try:
        stamps = np.array(timestamps, np.int64)
        doubles = np.array(values, "<f8")
    except OverflowError:
        return None
    return encode_columns(stamps, doubles, np.array(flags, np.int64) if any(flags) else None, len(tail))


def encode_columns(timestamps_ms: npt.NDArray[np.int64], values: npt.NDArray[np.float64],
                   flags: npt.NDArray[np.int64] | None, tail_fields: int = 0) -> bytes | None:
    """The Avro array encoding of numeric samples given as columns (`flags` None: all zero), with
    `tail_fields` null tail fields per sample; None when the fixed-width row does not fit them (no samples,
    flags beyond 0..63, or timestamps whose varints differ in length)."""
    n = int(timestamps_ms.size)
    if n == 0 or (flags is not None and (int(flags.min()) < 0 or int(flags.max()) > _MAX_FLAGS)):
        return None
    zigzag = ((timestamps_ms << 1) ^ (timestamps_ms >> 63)).view(np.uint64)
    width = _width(int(zigzag.max()))
    if _width(int(zigzag.min())) != width:
        return None
    rows = np.zeros((n, width + 11 + tail_fields), np.uint8)  # tail fields: union branch 0, null
    rows[:, :width] = ((zigzag[:, None] >> _SHIFTS[:width]) & _LOW7).astype(np.uint8) | _CONTINUE[width - 1]
    rows[:, width] = 2  # union branch 1: double
    rows[:, width + 1:width + 9] = np.ascontiguousarray(values, "<f8").view(np.uint8).reshape(n, 8)
    rows[:, width + 9] = 0  # svalue: union branch 0, null
    if flags is not None:
        rows[:, width + 10] = flags.astype(np.uint8) << 1
    return _varint(n) + rows.tobytes() + b"\x00"  # one block of n items, then the empty block that ends the array


def decode_samples(data: bytes, start: int, tail: Sequence[str] = ()) -> list[dict[str, Any]] | None:
    """The samples of an array that ends `data` at `start`, as fastavro returns them, or None when the array
    is not one block of fixed-width numeric rows (with `tail`, the layout's optional fields, all null).

    Each row is checked in full (a continuation bit on exactly the first `width - 1` timestamp bytes, branch 1,
    null svalue, a one-byte flags varint), so row i ends where row i + 1 is read: the layout is proven, not
    guessed.
    """
    columns = decode_columns(data, start, len(tail))
    if columns is None:
        return None
    stamps, values, flags = columns
    rows = zip(stamps.tolist(), values.tolist(), flags.tolist(), strict=True)
    if tail == ("time_text",):  # v3 spelt out: merging a dict of nulls into each sample cost ~3.5 % of a decode
        return [{"timestamp_ms": t, "value": v, "svalue": None, "flags": f, "time_text": None} for t, v, f in rows]
    nulls = dict.fromkeys(tail)
    return [{"timestamp_ms": t, "value": v, "svalue": None, "flags": f, **nulls} for t, v, f in rows]


Columns = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]


def decode_columns(data: bytes, start: int, tail_fields: int = 0) -> Columns | None:
    """(timestamps, values, flags) of the samples array that ends `data` at `start`, or None when it is not
    one block of fixed-width numeric rows with `tail_fields` null tail fields (see `decode_samples`)."""
    count, first = _read_count(data, start)
    if count is None or count == 0:
        return None
    width = next((i + 1 for i in range(10) if first + i < len(data) and not data[first + i] & 0x80), 0)
    row = width + 11 + tail_fields
    if width == 0 or len(data) != first + count * row + 1 or data[-1] != 0:
        return None
    rows = np.frombuffer(data, np.uint8, count * row, first).reshape(count, row)
    if not ((rows[:, :width - 1] & 0x80).all() and (rows[:, width - 1] < 0x80).all() and (rows[:, width] == 2).all()
            and not rows[:, width + 9].any() and (rows[:, width + 10] < 0x80).all()
            and not rows[:, width + 11:].any()):
        return None
    zigzag = ((rows[:, :width] & 0x7F).astype(np.uint64) << _SHIFTS[:width]).sum(axis=1, dtype=np.uint64)
    stamps = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(np.int64)
    values = rows[:, width + 1:width + 9].copy().view("<f8").ravel()
    flag_bytes = rows[:, width + 10].astype(np.int64)
    flags = (flag_bytes >> 1) ^ -(flag_bytes & 1)
    return stamps, values, flags


def _read_count(data: bytes, start: int) -> tuple[int | None, int]:
    """The block count at `start` and where the block's items begin; None for a negative count (a block
    with its byte size, which writers may use and this reader leaves to fastavro)."""
    shift = z = 0
    position = start
    while position < len(data):
        byte = data[position]
        z |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            count = (z >> 1) ^ -(z & 1)
            return (count if count >= 0 else None), position
        shift += 7
    return None, position
