"""``inspect --model model.bundle``: which file and backend run a bundle on this device.

The bundle is verified (:func:`defectdet.artifact.bundle.open_bundle`) and unpacked once into its
device cache. Then, with ``backend: auto``:

1. the newest engine in the device cache built for this GPU and TensorRT version (any precision,
   GPU or DLA: ``defectdet build-engine model.bundle`` put it there) runs on TensorRT;
2. none, and ``build_engine: true``: ``defectdet build-engine model.bundle`` runs first (in its
   own process: the station imports no export code), then 1.;
3. none, or no TensorRT on this machine: the deployed ONNX (INT8 when it passed the gate) runs on
   ONNX Runtime, and a warning says so and why.

``backend: onnxruntime`` skips 1-2; ``backend: tensorrt`` makes 3 an error. Every output carries
the bundle's id as ``model`` (``model.bundle:<first 12 hex of its id>``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..artifact import ModelCard, model_id
from ..artifact.bundle import SUFFIX, Bundle, is_bundle, matching_engines, open_bundle
from ..errors import ConfigError

LOG = logging.getLogger("defectdet.inspect")


@dataclass
class Resolved:
    """What the Detector is given for a bundle, and what the outputs say about it."""

    model: Path  # the file the Detector loads (.onnx or .engine, its sidecar beside it)
    backend: str
    model_id: str  # carried as ``model`` by events, summary.json, /metrics, OPC UA and the page
    info: Dict[str, Any] = field(default_factory=dict)  # extra facts for SinkContext.info
    note: str = ""  # why this file and backend, one line
    fix: str = ""  # what would run it on TensorRT, when it runs on ONNX Runtime for want of an engine


def _identity() -> dict:
    from ..runtime.backends.tensorrt import device_identity

    return device_identity()


def _build(bundle: Path) -> int:
    """``defectdet build-engine <bundle>`` in a child process; returns its exit status."""
    cmd = [sys.executable, "-m", "defectdet.cli", "build-engine", str(bundle)]
    LOG.info("no engine for this device in %s's cache: building one (%s)", bundle.name, " ".join(cmd))
    return subprocess.run(cmd, env=dict(os.environ)).returncode


def _engine_for(bundle: Bundle, dev: dict) -> Optional[Path]:
    """The newest cached engine for this device whose sidecar says it came from one of the bundle's models."""
    hashes = {bundle.manifest["files"][m]["sha256"] for m in bundle.models.values()}
    for engine in matching_engines(bundle, dev["gpu"], dev["compute_capability"], dev["tensorrt"]):
        card = ModelCard.load(engine, missing_ok=True)
        src = (card.engine or {}).get("source_onnx") or {}
        if src.get("sha256") in hashes:
            return engine
        LOG.warning("%s: not built from this bundle's models; ignored", engine)
    return None


def resolve_model(
    model: Any,
    backend: str = "auto",
    build_engine: bool = False,
    identity: Callable[[], dict] = _identity,
    build: Callable[[Path], int] = _build,
) -> Resolved:
    """The file and backend that run ``model`` (a bundle, or an .onnx/.engine passed through)."""
    path = Path(str(model))
    if path.suffix != SUFFIX and not is_bundle(path):  # a missing file: the Detector says so
        return Resolved(path, backend, model_id(path) if path.is_file() else path.name)
    from ..runtime.backends import BackendUnavailable

    bundle = open_bundle(path)  # verified: a changed, missing or extra member is refused here
    info = {"bundle": bundle.id}
    onnx = bundle.model_file()
    ort = Resolved(onnx, "onnxruntime", bundle.label, info)
    if backend == "onnxruntime":
        ort.note = f"{bundle.label}: {bundle.models[bundle.deployed]} on ONNX Runtime (backend=onnxruntime)"
        return ort
    try:
        dev = identity()
    except BackendUnavailable as e:
        if backend == "tensorrt":
            raise ConfigError(f"backend=tensorrt: {e}") from None
        why = str(e).split(": the ")[0]  # the first clause: what is missing (the install hint is long)
        ort.note = (
            f"{bundle.label}: no TensorRT engine can run here ({why}); running "
            f"{bundle.models[bundle.deployed]} on ONNX Runtime"
        )
        ort.fix = "on a Jetson: JetPack's TensorRT + pycuda (deploy/jetson/setup.sh), then build-engine"
        return ort
    engine = _engine_for(bundle, dev)
    if engine is None and build_engine:
        rc = build(path)
        if rc != 0:
            raise ConfigError(
                f"{path}: `defectdet build-engine {path}` failed (exit {rc}, its error above); "
                "set build_engine=false to inspect on ONNX Runtime"
            )
        engine = _engine_for(bundle, dev)
    if engine is None:
        return _no_engine(bundle, ort, backend, dev)
    name = engine.parent.name
    return Resolved(
        engine, "tensorrt", bundle.label, {**info, "engine": name}, f"{bundle.label}: TensorRT engine {name}"
    )


def _no_engine(bundle: Bundle, ort: Resolved, backend: str, dev: dict) -> Resolved:
    """ONNX Runtime, saying why, or (backend=tensorrt) a one-line error."""
    hint = f"run `defectdet build-engine {bundle.path}` on this device (or set build_engine=true)"
    if backend == "tensorrt":
        raise ConfigError(
            f"backend=tensorrt: {bundle.path} has no engine for this device ({dev['gpu']}, "
            f"TensorRT {dev['tensorrt']}): {hint}"
        )
    ort.fix = f"defectdet build-engine {bundle.path}"
    ort.note = (
        f"{bundle.label}: no engine for this device yet: running {bundle.models[bundle.deployed]} "
        f"on ONNX Runtime; {hint}"
    )
    return ort
