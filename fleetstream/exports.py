"""Lazy re-exports: a part's public names importable from the part itself, loaded on first use.

`from fleetstream.streams import run_worker` should not cost faust's import for a caller that only wants
`fleetstream.streams.validation`, and the CLI imports its commands' modules late for a fast start. So a
part's `__init__` lists its public names by module and gets `__getattr__`/`__dir__` from `lazy_exports`;
the same names are imported under TYPE_CHECKING there for type checkers and editors.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, by_module: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, re-exporting each module's names on first access.

    The package keeps a literal `__all__` (tools read it without importing); tests/test_imports.py checks
    that it names exactly these and that each resolves.
    """
    owner = {name: module for module, names in by_module.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(owner[name]), name)
        setattr(sys.modules[package], name, value)  # the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *owner})

    return __getattr__, __dir__
