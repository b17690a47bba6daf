"""Arrows one way: core ← parts ← commands, read from every module's imports (function-level ones included).

- The commands are the CLI, the demo, the local stack and `fleetstream.testing` (services for tests and
  benches).
- The core (`fleetstream.config`, `logs`, `errors`, `kafka`, `admin`, `topics`, `store`, ...) imports no part
  and no command.
- The contract (`fleetstream.schemas`) imports nothing of ours but the core.
- The parts that move data (`producers`, `streams`, `sinks`) and the read API (`api`) import the core and the
  contract, never each other, a command (`cli`, `demo`, `stack`, `services`) or the benchmarks.
- No two modules import each other, directly or around a loop: a cycle hidden in a function-level import is
  still a cycle.

The few exceptions are listed in ALLOWED with their reason; a listed exception that is no longer needed fails
too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("schemas", "producers", "streams", "sinks", "api", "benchmarks")
DATA_PARTS = ("producers", "streams", "sinks", "api")
COMMANDS = frozenset({"fleetstream.__main__", "fleetstream.cli", "fleetstream.cli_errors", "fleetstream.demo",
                      "fleetstream.stack", "fleetstream.testing"})

ALLOWED: dict[tuple[str, str], str] = {}
"""Imports that break a rule, each with its reason (none today: the benches, which drive parts as the CLI does,
live in `fleetstream.benchmarks` beside the other drivers)."""


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the namespace by dotted name; the parts come from their top-level folders."""
    folders = [(root / "fleetstream", "fleetstream")] + [(root / part, f"fleetstream.{part}") for part in PARTS]
    modules: dict[str, Path] = {}
    for folder, prefix in folders:
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            if relative.parts[0] in PARTS and prefix == "fleetstream":
                continue  # the links to the parts' folders, read from the folders themselves
            if not all((folder.joinpath(*relative.parts[:i]) / "__init__.py").is_file()
                       for i in range(len(relative.parts))):
                continue  # not a module of the package (the peers' jobs and their virtualenv, say)
            names = [prefix, *relative.with_suffix("").parts]
            modules[".".join(names[:-1] if names[-1] == "__init__" else names)] = path
    return modules


def _imported_names(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from package import module` imports the module, else a name of base
                yield f"{base}.{alias.name}"


def import_graph(root: Path) -> dict[str, set[str]]:
    """module → the modules of ours it imports (at any level of the file)."""
    modules = module_files(root)

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {owner(name) for name in _imported_names(module, path) if name.startswith("fleetstream")}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def layer(module: str) -> str:
    """`core`, `command`, or the part's name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PARTS:
        return parts[1]
    return "command" if module in COMMANDS else "core"


def violations(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """Every import against the direction rules, with the rule it breaks."""
    found: dict[tuple[str, str], str] = {}
    for module, targets in graph.items():
        source = layer(module)
        for target in targets:
            rule = _broken_rule(source, layer(target))
            if rule:
                found[(module, target)] = rule
    return found


def _broken_rule(source: str, target: str) -> str | None:
    if source == target or target == "core":
        return None
    if source == "core":
        return "the core imports no part and no command"
    if source == "schemas":
        return "the contract imports nothing of ours but the core"
    if source in DATA_PARTS and target != "schemas":
        return "producers, streams, sinks and api import only the core and the contract"
    return None


def test_every_part_and_the_core_are_read() -> None:
    graph = import_graph(ROOT)
    assert {layer(m) for m in graph} == {"core", "command", *PARTS}
    assert "fleetstream.streams.app" in graph and "fleetstream.admin" in graph["fleetstream.streams.app"]


def test_a_function_level_import_is_an_arrow_like_any_other(tmp_path: Path) -> None:
    (tmp_path / "fleetstream").mkdir()
    (tmp_path / "fleetstream" / "__init__.py").write_text("")
    for part in PARTS:
        (tmp_path / part).mkdir()
        (tmp_path / part / "__init__.py").write_text("")
    (tmp_path / "producers" / "agent.py").write_text("def run():\n    from fleetstream.producers.sources import x\n")
    (tmp_path / "producers" / "sources.py").write_text("from . import agent\n")
    (tmp_path / "streams" / "app.py").write_text("def go():\n    from fleetstream.stack import up\n")
    (tmp_path / "fleetstream" / "stack.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["fleetstream.producers.agent"] == {"fleetstream.producers.sources"}
    assert graph["fleetstream.producers.sources"] == {"fleetstream.producers.agent"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()
    assert set(violations(graph)) == {("fleetstream.streams.app", "fleetstream.stack")}


def test_imports_point_one_way() -> None:
    found = {edge: rule for edge, rule in violations(import_graph(ROOT)).items() if edge not in ALLOWED}
    assert not found, "\n".join(f"{a} imports {b}: {rule}" for (a, b), rule in sorted(found.items()))


def test_every_allowed_exception_is_still_needed() -> None:
    stale = set(ALLOWED) - set(violations(import_graph(ROOT)))
    assert not stale, f"remove from ALLOWED, these imports are gone or allowed anyway: {sorted(stale)}"


def test_no_import_cycles() -> None:
    try:
        graphlib.TopologicalSorter(import_graph(ROOT)).prepare()
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")
