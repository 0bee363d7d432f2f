"""What runs on the Jetson must stay framework-free: the detector (``defectdet.runtime``) and the
inspection station (``defectdet.station``) import no torch, ultralytics or training/export code —
checked in fresh interpreters and, for lazy imports too, by reading every source file."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
t = time.perf_counter()
import defectdet.runtime
from defectdet.runtime import Detector, Detections
from defectdet.runtime.backends import tensorrt as _trt_module  # the module itself must import cleanly too
import importlib, pkgutil
import defectdet.station
from defectdet.station import capture, decisions, health, inspect_cli, loop, registry, settings, sink
from defectdet.station import sinks, snapshots, sources
from defectdet.station.outputs import signals
found = pkgutil.walk_packages(defectdet.station.__path__, "defectdet.station.")  # outputs/ too
stations = [importlib.import_module(m.name) for m in found]
dt = time.perf_counter() - t
heavy = ["torch", "torchvision", "ultralytics", "tensorrt", "pycuda", "onnxruntime", "defectdet.train",
         "defectdet.losses", "defectdet.export"]
optional = ["pymodbus", "asyncua", "aiohttp", "prometheus_client", "selenium", "matplotlib", "paho"]
print(json.dumps({"loaded": [m for m in heavy if m in sys.modules], "seconds": dt, "modules": len(stations),
                  "optional": [m for m in optional if m in sys.modules]}))
"""


def _probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runtime_and_station_import_pull_no_framework():
    """torch/ultralytics never; tensorrt/pycuda/onnxruntime only when a backend is constructed."""
    result = _probe()
    assert result["loaded"] == [], f"defectdet.runtime / defectdet.station imported {result['loaded']}"


def test_station_outputs_import_their_libraries_only_when_enabled():
    """Importing every station module (Modbus, OPC UA, page, metrics, report) loads no optional library."""
    result = _probe()
    assert result["modules"] >= 14 and result["optional"] == []


def imports_in(source: str, package: str) -> set:
    """Absolute module names imported anywhere in ``source`` (relative ones resolved against ``package``)."""
    parts = package.split(".")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            names.add(".".join([*base, node.module] if node.module else base))
    return names


EDGE_PACKAGES = ("runtime", "station")  # what runs on the Jetson


def edge_imports() -> dict:
    """{file: modules it imports} for every file under defectdet/runtime and defectdet/station."""
    out = {}
    for p in sorted(f for pkg in EDGE_PACKAGES for f in (ROOT / "defectdet" / pkg).rglob("*.py")):
        package = ".".join(p.relative_to(ROOT).with_suffix("").parts[:-1])
        out[str(p.relative_to(ROOT))] = imports_in(p.read_text(encoding="utf-8"), package)
    return out


def forbidden(module: str) -> bool:
    if module.split(".")[0] in ("torch", "torchvision", "ultralytics"):
        return True
    return any(
        module == x or module.startswith(x + ".")
        for x in ("defectdet.train", "defectdet.losses", "defectdet.export")
    )


def test_runtime_and_station_sources_import_no_framework_even_lazily():
    """No import of torch / ultralytics / training code anywhere in defectdet/runtime, defectdet/station."""
    files = edge_imports()
    assert "defectdet/station/registry.py" in files and "defectdet/runtime/detector.py" in files
    offenders = [f"{f}: {m}" for f, mods in files.items() for m in mods if forbidden(m)]
    assert offenders == []


def test_import_scanner_sees_lazy_and_relative_imports():
    src = "def f():\n    import torch.nn\n    from ...export import onnx\n    from ..runtime import x\n"
    found = {m for m in imports_in(src, "defectdet.runtime.backends") if forbidden(m)}
    assert found == {"torch.nn", "defectdet.export"}


def test_tensorrt_and_pycuda_only_in_their_backend():
    hits = [
        f
        for f, mods in edge_imports().items()
        if any(m.split(".")[0] in ("tensorrt", "pycuda") for m in mods)
    ]
    assert hits == ["defectdet/runtime/backends/tensorrt.py"]


def test_the_detector_does_not_depend_on_the_station():
    """One way only: defectdet.station builds on defectdet.runtime, never the reverse."""
    back = [
        f"{f}: {m}"
        for f, mods in edge_imports().items()
        if f.startswith("defectdet/runtime/")
        for m in mods
        if m == "defectdet.station" or m.startswith("defectdet.station.")
    ]
    assert back == []
