"""No import cycles inside the defectdet package, and no two-way dependency between its folders:
the graph of every module's imports, read from the source with ``ast`` — function-level imports,
``if TYPE_CHECKING:`` imports and ``importlib.import_module("defectdet....")`` string edges
included, so neither a lazy import, a typing-only one nor a dispatcher's table can hide a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "defectdet"
IMPORTERS = {"import_module", "__import__"}  # calls that import a module named by a string


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_by_name(tree: ast.AST) -> bool:
    """True when the module imports modules named by strings (importlib.import_module, __import__)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in IMPORTERS:
                return True
    return False


def _resolve(package: str, level: int, module: str | None) -> str:
    anchor = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join(anchor + ([module] if module else []))


def imports_of_source(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """defectdet modules that the module ``name`` (its ``source``) imports: ``import`` statements
    anywhere (TYPE_CHECKING blocks and function bodies included; ``from . import x`` names module x
    when it is one) and, in a module that calls ``import_module``/``__import__``, every string
    constant naming a defectdet module (a dispatcher's table)."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.level, node.module) if node.level else node.module or ""
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    if _imports_by_name(tree):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                found.add(
                    _resolve(package, len(text) - len(text.lstrip(".")), text.lstrip("."))
                    if text.startswith(".")
                    else text
                )
    return {m for m in found if m in modules and m != name}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    return imports_of_source(
        path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules
    )


def graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def unit(module: str) -> str:
    """The folder-level unit of a module: its sub-package (``defectdet.export``), or the top-level
    module itself (``defectdet.evaluate``); the package root is its own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def two_way(g: dict[str, set[str]]) -> list[tuple[str, str, str, str]]:
    """Pairs of units that depend on each other: (unit a, unit b, an edge a -> b, an edge b -> a)."""
    edges: dict[tuple[str, str], str] = {}
    for m, deps in sorted(g.items()):
        for d in sorted(deps):
            if unit(m) != unit(d):
                edges.setdefault((unit(m), unit(d)), f"{m} -> {d}")
    return [(a, b, e, edges[(b, a)]) for (a, b), e in sorted(edges.items()) if a < b and (b, a) in edges]


def test_the_cycle_finder_sees_a_circle_and_a_clean_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_reads_relative_lazy_typing_and_importlib_imports():
    g = graph()
    assert "defectdet.config" in g["defectdet.data.formats"]  # from ..config import ...
    assert (
        "defectdet.data.synthetic" in g["defectdet.demo"]
    )  # inside run_demo: from .data.synthetic import ...
    assert "defectdet.export.onnx" in g["defectdet.cli"]  # COMMANDS table + importlib.import_module
    assert len(g) > 20
    modules = {"p", "p.a", "p.b", "p.c", "p.d"}
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n"
    assert imports_of_source(typing_only, "p.a", False, modules) == {"p.b"}
    table = (
        "import importlib\nT = {'x': 'p.c', 'y': '.d'}\ndef f(n):\n    return importlib.import_module(T[n])\n"
    )
    assert imports_of_source(table, "p.a", False, modules) == {"p.c", "p.d"}
    assert (
        imports_of_source("T = {'x': 'p.c'}\n", "p.a", False, modules) == set()
    )  # a string alone is no import


def test_the_two_way_finder_sees_folders_that_depend_on_each_other():
    g = {
        "d.export.gate": {"d.evaluate"},
        "d.evaluate": {"d.export.uint8"},
        "d.export.uint8": set(),
        "d.station.sink": {"d.station.sinks"},
        "d.station.sinks": {"d.station.sink"},
    }
    assert two_way(g) == [
        ("d.evaluate", "d.export", "d.evaluate -> d.export.uint8", "d.export.gate -> d.evaluate")
    ]


def test_no_import_cycles_in_the_package():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_two_way_dependency_between_folders():
    pairs = two_way(graph())
    assert not pairs, "two-way dependencies: " + "; ".join(
        f"{a} <-> {b} ({e1}; {e2})" for a, b, e1, e2 in pairs
    )


OUTPUTS = "defectdet.station.outputs"
SINK_CONTRACT = {"defectdet.station.sink", "defectdet.station.result", "defectdet.station.safety"}
OUTPUT_BUILDERS = {"defectdet.station.registry", "defectdet.station.review_cli"}


def _in_outputs(module: str) -> bool:
    return module == OUTPUTS or module.startswith(OUTPUTS + ".")


def test_the_outputs_sit_below_the_station_that_builds_them():
    """station/outputs/ imports, of the rest of the station, only the sink contract and the line
    safety; only the registry (and ``defectdet review``'s server) imports an output: no two-way
    dependency between the station and its outputs folder, lazy and typing-only imports included."""
    g = graph()
    assert "defectdet.station.outputs.modbus" in g and "defectdet.station.sink" in g[OUTPUTS + ".modbus"]
    up = [
        f"{m} -> {d}"
        for m, deps in sorted(g.items())
        if _in_outputs(m)
        for d in sorted(deps)
        if d.startswith("defectdet.station.") and not _in_outputs(d) and d not in SINK_CONTRACT
    ]
    assert up == [], "an output reaches above the sink contract: " + "; ".join(up)
    users = {m for m, deps in g.items() if not _in_outputs(m) and any(_in_outputs(d) for d in deps)}
    assert users <= OUTPUT_BUILDERS, (
        f"outputs imported outside the registry: {sorted(users - OUTPUT_BUILDERS)}"
    )
