"""The installed layout: one `fleetstream` namespace holding every part, typed, and nothing else at the top level."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("schemas", "producers", "streams", "sinks", "api", "benchmarks")


@pytest.mark.parametrize("part", PARTS)
def test_each_part_is_a_module_of_the_namespace_from_its_top_level_folder(part: str) -> None:
    module = __import__(f"fleetstream.{part}", fromlist=["__name__"])
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / part


def test_the_namespace_ships_a_py_typed_marker() -> None:
    assert resources.files("fleetstream").joinpath("py.typed").is_file()


@pytest.mark.slow
def test_the_wheel_installs_only_the_fleetstream_namespace(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("fleetstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"fleetstream"}
    for part in PARTS:
        assert f"fleetstream/{part}/__init__.py" in names, part
    assert "fleetstream/py.typed" in names
    assert "fleetstream/schemas/avro/fingerprints.lock" in names
    assert not [name for name in names if "/peers/" in name], "the peers' jobs run in their own virtualenv"


def _exports_declared(part: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(module, name) pairs the part's `__init__` imports for type checkers, and those it re-exports lazily."""
    tree = ast.parse((ROOT / part / "__init__.py").read_text())
    typed = {(node.module or "", alias.name) for block in tree.body if isinstance(block, ast.If)
             for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    lazy: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports":
            mapping = ast.literal_eval(node.args[1])
            lazy = {(module, name) for module, names in mapping.items() for name in names}
    return typed, lazy


@pytest.mark.parametrize("part", [p for p in PARTS if p != "api"])
def test_each_part_re_exports_its_public_names_from_its_init(part: str) -> None:
    module = importlib.import_module(f"fleetstream.{part}")
    typed, lazy = _exports_declared(part)
    assert typed == lazy, "the TYPE_CHECKING imports and the lazy_exports mapping must name the same things"
    assert set(module.__all__) == {name for _, name in lazy}
    for source, name in lazy:
        assert getattr(module, name) is getattr(importlib.import_module(source), name)
        assert name in dir(module)


def test_the_api_part_re_exports_its_public_names() -> None:
    module = importlib.import_module("fleetstream.api")
    assert all(getattr(module, name) for name in module.__all__)


def test_importing_a_part_loads_none_of_its_modules() -> None:
    """A caller of `fleetstream.streams.validation` does not pay for faust, nor the CLI for every part."""
    code = ("import sys, fleetstream.streams, fleetstream.sinks, fleetstream.producers; "
            "print(sorted(m for m in sys.modules if m.startswith(('faust', 'clickhouse_connect', 'serial'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
