"""The contract every part imports: Avro record types, their framing, dead letters and canonical units.

- `codec`: `Codec` (single-object framing or a Schema Registry) and the module-level `encode`/`decode`.
- `registry`: the versioned `.avsc` files and their fingerprints.
- `deadletter`: the dead-letter envelope, built in one place.
- `units`: canonical units and conversion; an unknown unit is kept and labelled, never guessed.
- `sample_arrays`: a batch's samples as arrays, for the hot path.

Which record type travels on which topic is the core's topic model (`fleetstream.topics`).
"""

from typing import TYPE_CHECKING

from fleetstream.exports import lazy_exports

if TYPE_CHECKING:
    from fleetstream.schemas.codec import Codec, DecodeError, decode, encode, serializer
    from fleetstream.schemas.deadletter import dead_letter, dead_letter_envelope
    from fleetstream.schemas.registry import record_types
    from fleetstream.schemas.units import UNKNOWN_UNIT, UnknownUnitError, canonical_unit, to_canonical

__all__ = [
    "UNKNOWN_UNIT",
    "Codec",
    "DecodeError",
    "UnknownUnitError",
    "canonical_unit",
    "dead_letter",
    "dead_letter_envelope",
    "decode",
    "encode",
    "record_types",
    "serializer",
    "to_canonical",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "fleetstream.schemas.codec": ["Codec", "DecodeError", "decode", "encode", "serializer"],
    "fleetstream.schemas.deadletter": ["dead_letter", "dead_letter_envelope"],
    "fleetstream.schemas.registry": ["record_types"],
    "fleetstream.schemas.units": ["UNKNOWN_UNIT", "UnknownUnitError", "canonical_unit", "to_canonical"],
})
