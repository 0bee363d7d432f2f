"""What runs on a JetPack 5 Jetson (Python 3.8) stays Python 3.8 code: ``defectdet.runtime``,
``defectdet.station``, the ``defectdet`` entry point, ``defectdet build-engine`` and every defectdet
module they import, checked
statically (no 3.8 interpreter here): vermin (the dev extra) with ``-t=3.8-``, annotations evaluated in
modules without ``from __future__ import annotations``, plus an AST check for what vermin misses."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from test_runtime_notorch import EDGE_PACKAGES, imports_in

from defectdet import cli

ROOT = Path(__file__).resolve().parents[1]
FLOOR = (3, 8)
FUTURE = "from __future__ import annotations"


def _module_file(name: str):
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def edge_files() -> list:
    """The edge packages, the CLI entry point, build-engine, and every defectdet module they import (deep)."""
    todo = [p for pkg in EDGE_PACKAGES for p in (ROOT / "defectdet" / pkg).rglob("*.py")]
    todo += [
        ROOT / "defectdet/__init__.py",
        ROOT / "defectdet/cli.py",
        ROOT / "defectdet/export/tensorrt.py",
        ROOT / "defectdet/checks.py",
    ]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        package = ".".join(p.relative_to(ROOT).with_suffix("").parts[:-1])
        for name in imports_in(p.read_text(encoding="utf-8"), package):
            parts = name.split(".")  # `from .x import y`: y may be a module too
            for cand in (name, *(".".join(parts[:i]) for i in range(1, len(parts)))):
                f = _module_file(cand) if cand.startswith("defectdet") else None
                if f is not None and f not in seen:
                    todo.append(f)
    return sorted(seen)


def test_the_edge_set_is_what_the_jetson_runs():
    names = {str(p.relative_to(ROOT)) for p in edge_files()}
    for must in (
        "defectdet/station/loop.py",
        "defectdet/runtime/backends/tensorrt.py",
        "defectdet/config.py",
        "defectdet/errors.py",
        "defectdet/cli.py",
        "defectdet/data/synthetic.py",
    ):
        assert must in names
    assert "defectdet/export/tensorrt.py" in names  # build-engine runs on the Jetson
    assert {
        "defectdet/checks.py",
        "defectdet/artifact/bundle.py",
        "defectdet/export/bundle_engine.py",
    } <= names
    assert not any(n.startswith(("defectdet/train", "defectdet/losses")) for n in names)


# ----------------------------------------------------------------------------------- vermin
def _vermin(files, eval_annotations: bool) -> subprocess.CompletedProcess:
    run = "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())"  # vermin has no __main__
    args = [
        sys.executable,
        "-c",
        run,
        f"-t={FLOOR[0]}.{FLOOR[1]}-",
        "--no-tips",
        "--violations",
        "--no-parse-comments",
    ]
    args += ["--eval-annotations"] if eval_annotations else []
    return subprocess.run(
        args + [str(f) for f in files], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_vermin_finds_nothing_newer_than_python_3_8():
    pytest.importorskip("vermin", reason="vermin not installed (pip install -e '.[dev]')")
    files = edge_files()
    lazy = [
        f for f in files if FUTURE in f.read_text(encoding="utf-8")
    ]  # annotations are never evaluated there
    for group, evaluate in ((lazy, False), ([f for f in files if f not in lazy], True)):
        if group:
            out = _vermin(group, evaluate)
            assert out.returncode == 0, f"needs a Python newer than 3.8:\n{out.stdout}{out.stderr}"


# ----------------------------------------------------------------------------------- what vermin misses
NEWER_METHODS = {
    "removeprefix": "3.9",
    "removesuffix": "3.9",
    "is_relative_to": "3.9",
    "with_stem": "3.9",
    "readlink": "3.9",
    "bit_count": "3.10",
    "cache": "3.9",
}
GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def newer_than_38(source: str) -> list:
    """``line: what`` for each construct needing Python > 3.8 that vermin does not see: a dict union whose
    operand is a dict display, a 3.9+ method by name, ``zip(strict=)``, ``match``, a builtin generic
    subscripted at run time (outside annotations) and, without the __future__ import, in annotations."""
    tree, found = ast.parse(source), []
    lazy = FUTURE in source
    annotations = set()
    for node in ast.walk(tree):
        for ann in _annotations(node):
            annotations.update(id(n) for n in ast.walk(ann))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.value,)
            if any(isinstance(s, (ast.Dict, ast.DictComp)) for s in sides):
                found.append(f"{line}: dict | dict (3.9)")
        elif isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS and id(node) not in annotations:
            found.append(f"{line}: .{node.attr} ({NEWER_METHODS[node.attr]})")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") == "zip"
            and any(k.arg == "strict" for k in node.keywords)
        ):
            found.append(f"{line}: zip(strict=) (3.10)")
        elif type(node).__name__ == "Match":
            found.append(f"{line}: match statement (3.10)")
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") in GENERICS:
            if id(node) not in annotations or not lazy:
                found.append(f"{line}: {node.value.id}[...] evaluated at run time (3.9)")
    return found


def _annotations(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield from (
            a.annotation
            for a in [
                *node.args.args,
                *node.args.kwonlyargs,
                *node.args.posonlyargs,
                node.args.vararg,
                node.args.kwarg,
            ]
            if a is not None and a.annotation
        )
        if node.returns:
            yield node.returns
    elif isinstance(node, ast.AnnAssign):
        yield node.annotation


def test_the_ast_check_catches_what_it_should():
    bad = (
        "d = {} | {'a': 1}\nx = 'ab'.removeprefix('a')\nfor a, b in zip([], [], strict=True): pass\n"
        "v: list[int] = list[int]()\ndef f(x: dict[str, int]) -> None: ...\n"
    )
    assert len(newer_than_38(bad)) == 6  # list[int] twice (annotation and call), dict[...] in an annotation
    assert (
        newer_than_38(f"{FUTURE}\nv: list[int] = []\ndef f(x: dict[str, int]) -> tuple[int, ...]: ...\n")
        == []
    )


@pytest.mark.parametrize("path", edge_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_construct_newer_than_python_3_8(path):
    assert newer_than_38(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(ROOT)} needs a Python newer than 3.8"
    )


# ----------------------------------------------------------------------------------- the split floor
def test_pyproject_floor_is_3_8_and_the_training_extra_needs_3_9():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.8"
    assert all("python_version >= '3.9'" in r for r in project["optional-dependencies"]["train"])
    assert not any("python_version" in r for r in project["dependencies"])  # the core installs everywhere
    edge = project["optional-dependencies"][
        "edge"
    ]  # the edge extra too: only onnxruntime's floor differs on 3.8
    assert [r for r in edge if "python_version" in r] == [
        "onnxruntime>=1.17; python_version >= '3.9'",
        "onnxruntime>=1.16; python_version < '3.9'",
    ]


def test_training_commands_on_python_3_8_are_one_line_errors(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_python", lambda: (3, 8))
    assert cli.main(["train", "data=x.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "defectdet train: needs Python 3.9 or newer (this is 3.8); on Python 3.8 (JetPack 5) defectdet "
        "runs inspect, report, build-engine and checks only — train, validate and export on a workstation"
    )
    with pytest.raises(SystemExit) as e:  # inspect itself goes on
        cli.main(["inspect", "--help"])
    assert e.value.code == 0
