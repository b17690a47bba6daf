"""One in-memory form for a batch of samples, from the wire to ClickHouse: the record's fields plus numpy columns.

A signal or dyno batch is one Kafka message of ~100 samples. The codec decodes it straight into a `SampleBatch`
(`fleetstream.schemas.codec.Codec.decode_batch`) and encodes it straight from one; validation judges its columns
with masks, dedup, windows, alerts and KPIs take its arrays, and the ClickHouse sink hands the arrays to Arrow. No stage
turns the samples into per-sample dicts and back, which was most of the worker's time.

The columns follow the Avro sample layouts (`SignalSample`, `DynoSample`):

- `timestamp_ms` int64, `value` float64, `flags` int64, one entry per sample;
- `has_value` bool: False where a signal sample's value is null (its `value` entry is then NaN, never read);
  dyno values are never null;
- `svalue`: the per-sample string values, or None when every one is null (the common case, and always for dyno);
- `tail`: later optional sample fields (v3's `time_text`) with at least one value set; a field absent from it is
  null in every sample.

A batch is immutable in use: `take` and `replace` return new batches, so a stage never changes what another
stage holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SAMPLE_BATCH_TYPES", "SampleBatch"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SAMPLE_BATCH_TYPES = frozenset({"signal_batch", "dyno_sample_batch"})
"""Record types whose `samples` array a `SampleBatch` holds."""

_SAMPLE_KEYS = frozenset({"timestamp_ms", "value", "svalue", "flags"})


@dataclass(frozen=True, eq=False)
class SampleBatch:
    """A signal or dyno batch: record-level `fields` and the samples as columns (see the module docstring).

    It reads like the decoded record for its record-level fields (`batch["batch_id"]`, `batch.get("unit")`),
    so code that only needs those takes either form; `samples` is not one of them: ask the columns. `len` is
    the number of samples.
    """

    record_type: str
    fields: dict[str, Any]
    timestamp_ms: IntArray
    value: FloatArray
    flags: IntArray
    has_value: BoolArray
    svalue: list[str | None] | None = None
    tail: dict[str, list[Any]] = field(default_factory=dict)
    tail_fields: tuple[str, ...] = ()
    """Every optional sample field the record form carries (null where not in `tail`)."""

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_columns(cls, record_type: str, fields: Mapping[str, Any], timestamp_ms: npt.ArrayLike,
                     value: npt.ArrayLike, flags: npt.ArrayLike | None = None) -> SampleBatch:
        """A batch of numeric samples (no string values, no tail fields set)."""
        ts = np.asarray(timestamp_ms, dtype=np.int64)
        return cls(record_type, {k: v for k, v in fields.items() if k != "samples"}, ts,
                   np.asarray(value, dtype=np.float64),
                   np.zeros(ts.size, np.int64) if flags is None else np.asarray(flags, dtype=np.int64),
                   np.ones(ts.size, np.bool_))

    @classmethod
    def from_record(cls, record_type: str, record: Mapping[str, Any]) -> SampleBatch:
        """The batch of a decoded record (the general path: fastavro's dicts, or a producer's)."""
        samples = record["samples"]
        n = len(samples)
        values = [s.get("value") for s in samples]
        has_value = np.fromiter((v is not None for v in values), np.bool_, n)
        svalue = [s.get("svalue") for s in samples]
        tail_names = {k for s in samples for k in s if k not in _SAMPLE_KEYS}
        tail = {name: [s.get(name) for s in samples] for name in sorted(tail_names)}
        return cls(
            record_type, {k: v for k, v in record.items() if k != "samples"},
            np.fromiter((s["timestamp_ms"] for s in samples), np.int64, n),
            np.fromiter((np.nan if v is None else v for v in values), np.float64, n),
            np.fromiter((s.get("flags", 0) for s in samples), np.int64, n),
            has_value,
            svalue if any(v is not None for v in svalue) else None,
            {name: column for name, column in tail.items() if any(v is not None for v in column)},
            tuple(sorted(tail_names)),
        )

    # --- the record form (the general Avro writer, tests) --------------------------------------------------

    def samples(self) -> list[dict[str, Any]]:
        """The samples as the Avro sample dicts a decoded record holds (for fastavro, and tests)."""
        if self.record_type == "dyno_sample_batch":
            return [{"timestamp_ms": t, "value": v, "flags": f} for t, v, f in
                    zip(self.timestamp_ms.tolist(), self.value.tolist(), self.flags.tolist(), strict=True)]
        values: list[float | None] = self.value.tolist()
        if not self.has_value.all():
            values = [v if present else None for v, present in zip(values, self.has_value.tolist(), strict=True)]
        svalues = self.svalue if self.svalue is not None else [None] * len(self)
        out = [{"timestamp_ms": t, "value": v, "svalue": s, "flags": f} for t, v, s, f in
               zip(self.timestamp_ms.tolist(), values, svalues, self.flags.tolist(), strict=True)]
        for name in self.tail_fields:
            column = self.tail.get(name)
            for i, sample in enumerate(out):
                sample[name] = None if column is None else column[i]
        return out

    def to_record(self) -> dict[str, Any]:
        """The decoded-record form: the fields with the samples array."""
        return {**self.fields, "samples": self.samples()}

    # --- derived batches -----------------------------------------------------------------------------------

    def take(self, selector: BoolArray | IntArray) -> SampleBatch:
        """The samples a mask or an index array selects, in that order, with the same record fields."""
        index = np.flatnonzero(selector) if selector.dtype == np.bool_ else selector
        picked = index.tolist()
        svalue = None if self.svalue is None else [self.svalue[i] for i in picked]
        tail = {name: [column[i] for i in picked] for name, column in self.tail.items()}
        return replace(self, timestamp_ms=self.timestamp_ms[index], value=self.value[index],
                       flags=self.flags[index], has_value=self.has_value[index],
                       svalue=svalue if svalue is None or any(v is not None for v in svalue) else None,
                       tail={name: column for name, column in tail.items() if any(v is not None for v in column)})

    def with_fields(self, **fields: Any) -> SampleBatch:
        """The same samples under changed record fields (e.g. the batch id of a split part)."""
        return replace(self, fields={**self.fields, **fields})

    def with_columns(self, *, value: FloatArray | None = None, flags: IntArray | None = None) -> SampleBatch:
        """The same batch with new `value` or `flags` columns (the input batch is left as it was)."""
        return replace(self, value=self.value if value is None else value,
                       flags=self.flags if flags is None else flags)

    # --- record-level fields, read like the decoded record ------------------------------------------------

    def __len__(self) -> int:
        return int(self.timestamp_ms.size)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def equals(self, other: SampleBatch) -> bool:
        """Same record type, fields and samples (NaN equal to NaN where a value is present; an optional sample
        field that is null everywhere equals its absence)."""
        return (self.record_type == other.record_type and self.fields == other.fields
                and np.array_equal(self.timestamp_ms, other.timestamp_ms)
                and np.array_equal(self.has_value, other.has_value)
                and np.array_equal(self.value[self.has_value], other.value[other.has_value], equal_nan=True)
                and np.array_equal(self.flags, other.flags) and self.svalue == other.svalue
                and self.tail == other.tail)
