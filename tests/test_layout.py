"""The installed layout: one `fleetstream` namespace holding every part, typed, and nothing else at the top level."""

from __future__ import annotations

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
