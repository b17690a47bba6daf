"""The canonical units every source converts to before publishing, and the conversions into them.

Canonical units are the ones dyno operators read and the validation range table is written in
(DESIGN.md): rpm, hp, ft-lb, AFR, lambda, kPa, degF, %, mph, lbf, V, A, s. Sources convert once, at the
edge, so streams and sinks never see two units for one quantity.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CANONICAL_UNITS", "UNKNOWN_UNIT", "UnknownUnitError", "canonical_unit", "is_unknown_unit", "to_canonical",
           "unknown_unit"]

UNKNOWN_UNIT = "unknown"
"""The unit of a value whose unit its source does not declare in a way known for certain.

Such a value is published as the source's number, unchanged, under `unknown` or `unknown(<what the source
declared>)`, e.g. `unknown(code=11,sub=0)`. No conversion applies to it: to_canonical returns the value
unchanged and the marker as its canonical unit, so no range rule (each written in a real unit) matches it."""


class UnknownUnitError(ValueError):
    """A unit with no known conversion; the caller names the channel and source in its error."""


def _linear(scale: float, offset: float = 0.0) -> Callable[[float], float]:
    return lambda v: v * scale + offset


# unit spelling (lower case, as found in files and specs) -> (canonical unit, conversion)
_CONVERSIONS: dict[str, tuple[str, Callable[[float], float]]] = {
    "rpm": ("rpm", _linear(1.0)),
    "hp": ("hp", _linear(1.0)),
    "kw": ("hp", _linear(1.0 / 0.745699872)),
    "ps": ("hp", _linear(0.98632)),
    "ft-lb": ("ft-lb", _linear(1.0)),
    "ft-lbs": ("ft-lb", _linear(1.0)),
    "ft·lb": ("ft-lb", _linear(1.0)),
    "lb-ft": ("ft-lb", _linear(1.0)),
    "ftlb": ("ft-lb", _linear(1.0)),
    "n·m": ("ft-lb", _linear(0.737562149)),
    "n-m": ("ft-lb", _linear(0.737562149)),
    "nm": ("ft-lb", _linear(0.737562149)),
    "afr": ("AFR", _linear(1.0)),
    "a/f": ("AFR", _linear(1.0)),
    "lambda": ("lambda", _linear(1.0)),
    "kpa": ("kPa", _linear(1.0)),
    "psi": ("kPa", _linear(6.894757293)),
    "bar": ("kPa", _linear(100.0)),
    "inhg": ("kPa", _linear(3.386388640)),
    "degf": ("degF", _linear(1.0)),
    "°f": ("degF", _linear(1.0)),
    "f": ("degF", _linear(1.0)),
    "degc": ("degF", _linear(1.8, 32.0)),
    "°c": ("degF", _linear(1.8, 32.0)),
    "c": ("degF", _linear(1.8, 32.0)),
    "%": ("%", _linear(1.0)),
    "percent": ("%", _linear(1.0)),
    "mph": ("mph", _linear(1.0)),
    "km/h": ("mph", _linear(0.621371192)),
    "kph": ("mph", _linear(0.621371192)),
    "m/s": ("mph", _linear(2.236936292)),
    "lbf": ("lbf", _linear(1.0)),
    "n": ("lbf", _linear(0.224808943)),
    "v": ("V", _linear(1.0)),
    "volts": ("V", _linear(1.0)),
    "a": ("A", _linear(1.0)),
    "amps": ("A", _linear(1.0)),
    "s": ("s", _linear(1.0)),
    "ms": ("s", _linear(0.001)),
    "m": ("ft", _linear(3.280839895)),
    "ft": ("ft", _linear(1.0)),
    "kg/h": ("lb/h", _linear(2.204622622)),
    "lb/h": ("lb/h", _linear(1.0)),
    "ratio": ("ratio", _linear(1.0)),
    "mph/s": ("mph/s", _linear(1.0)),
    "km/h/s": ("mph/s", _linear(0.621371192)),
    "deg": ("deg", _linear(1.0)),
    "°": ("deg", _linear(1.0)),
    "g/s": ("g/s", _linear(1.0)),
    "lb/min": ("g/s", _linear(7.559872833)),
    "": ("", _linear(1.0)),
}

_UNCHANGED = _linear(1.0)

CANONICAL_UNITS = frozenset(unit for unit, _ in _CONVERSIONS.values())


def unknown_unit(declared: str = "") -> str:
    """The unknown-unit marker, naming what the source declared when it declared something: `unknown(code=11)`."""
    return f"{UNKNOWN_UNIT}({declared})" if declared else UNKNOWN_UNIT


def is_unknown_unit(unit: str) -> bool:
    """True for the markers unknown_unit() makes: the value is the source's number, its unit not known."""
    unit = unit.strip().lower()
    return unit == UNKNOWN_UNIT or (unit.startswith(UNKNOWN_UNIT + "(") and unit.endswith(")"))


def canonical_unit(unit: str) -> str:
    """The canonical unit a value in `unit` is converted to."""
    return _lookup(unit)[0]


def to_canonical(value: float, unit: str) -> tuple[float, str]:
    """Convert one value into its canonical unit: (converted value, canonical unit)."""
    canonical, convert = _lookup(unit)
    return convert(value), canonical


def _lookup(unit: str) -> tuple[str, Callable[[float], float]]:
    if is_unknown_unit(unit):
        return unit.strip(), _UNCHANGED
    try:
        return _CONVERSIONS[unit.strip().lower()]
    except KeyError:
        raise UnknownUnitError(f"unknown unit {unit!r}; known: {', '.join(sorted(_CONVERSIONS))}") from None
