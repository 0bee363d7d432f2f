"""Load a ``bench/<name>.py`` script as a module (bench/ is not a package), once per test session."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    """``load("runtime")`` -> the module of ``bench/runtime.py``."""
    key = f"defectdet_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


# The stand-in detectors the edge tests run (bench/runtime.py: make_model, which needs ultralytics
# to export them). Under Python 3.8 (.ci/py38.sh) ultralytics is absent: the script builds these once
# with the workstation's interpreter into $DEFECTDET_STANDIN_CACHE, and the 3.8 run copies them.
STANDINS = {
    "conveyor128": (128, {"logit_mean": -4.0, "logit_std": 1.5}),
    "conveyor96": (96, {"logit_mean": -3.0, "logit_std": 1.5}),
}


def stand_in_model(out_dir, name: str) -> Path:
    """``out_dir/model.onnx`` (+ sidecar): the stand-in ``name`` of :data:`STANDINS`, from the cache
    when there is one, else exported with ultralytics; skips where neither is available."""
    import os
    import shutil

    cache = os.environ.get("DEFECTDET_STANDIN_CACHE")
    cached = Path(cache) / name if cache else None
    out_dir = Path(out_dir)
    if cached is not None and (cached / "model.onnx").is_file():
        shutil.copytree(cached, out_dir, dirs_exist_ok=True)
        return out_dir / "model.onnx"
    import pytest

    pytest.importorskip(
        "ultralytics",
        reason="the stand-in model is exported with ultralytics (absent here, "
        "and no $DEFECTDET_STANDIN_CACHE)",
    )
    imgsz, kw = STANDINS[name]
    path = load("runtime").make_model(out_dir, imgsz, **kw)
    if cached is not None:
        shutil.copytree(out_dir, cached, dirs_exist_ok=True)
    return path
