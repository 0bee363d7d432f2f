"""``defectdet build-engine model.bundle``: build this device's engine into the bundle's device cache.

Engines are not portable: one is tied to the GPU (or DLA core), the TensorRT version and the
precision it was built for, so it is kept in the device cache beside the bundle under
``engines/<key>/`` (:func:`defectdet.artifact.bundle.engine_key`), never inside the bundle.
``defectdet inspect --model model.bundle`` picks the engine whose key matches the device it runs on.

Which model and flags (``--precision``, default ``auto``):

* ``int8``: the bundle's INT8 Q/DQ ONNX (it passed the accuracy gate), explicit INT8 (+ FP16 for
  the layers kept in float before TensorRT 11). With ``--dla-core``: the DLA does not run Q/DQ
  networks, so the FP32 ONNX is calibrated implicitly (TensorRT <= 10.x), from the bundle's
  calibration cache when it holds one for that model, else from ``--calib-data`` into a cache in
  the device cache named by the model's sha256 (so it can never pair with another model);
* ``fp16``: the FP32 ONNX with the FP16 flag (TensorRT <= 10.x); ``fp32``: as exported;
* ``auto``: ``int8`` when the bundle has an INT8 model and no DLA core is asked, else ``fp16``
  (``fp32`` on TensorRT 11, which has no FP16 flag for an FP32-typed ONNX).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..artifact import ModelCard, sha256_file, sidecar_path
from ..artifact.bundle import Bundle, engine_key, open_bundle
from ..errors import ConfigError
from . import ExportError
from .engine_plan import EngineOptions, parse_version, plan_build, trtexec_command

PRECISIONS = ("auto", "int8", "fp16", "fp32")


@dataclass
class BundleBuild:
    """What ``build-engine`` did for a bundle."""

    engine: Path
    key: str
    precision: str
    built: bool  # False: a matching engine was in the device cache already


def resolve_precision(bundle: Bundle, precision: str, dla_core: Optional[int], trt_version: str) -> str:
    """``auto`` -> int8 / fp16 / fp32 (module docstring); an explicit one is checked against the bundle."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if "int8" in bundle.models and dla_core is None:
            return "int8"
        return "fp32" if parse_version(trt_version)[0] >= 11 else "fp16"
    if precision == "int8" and "int8" not in bundle.models and dla_core is None:
        why = (bundle.manifest.get("gate") or {}).get("reasons") or ["it was not packaged with --int8"]
        raise ConfigError(f"{bundle.path}: no INT8 model ({'; '.join(why)}); build --precision fp16 or fp32")
    return precision


def engine_options(
    bundle: Bundle,
    files: Path,
    precision: str,
    dla_core: Optional[int],
    out: Path,
    cache: Optional[Path],
    **kw: Any,
) -> EngineOptions:
    """The :class:`EngineOptions` that build ``precision`` from the bundle's extracted files."""
    models = bundle.models
    fp32 = files / models["fp32"]
    if precision == "int8" and dla_core is None:
        return EngineOptions(onnx=files / models["int8"], out=out, int8=True, fp16=True, **kw)
    if precision == "int8":  # the DLA: implicit INT8 on the FP32 model, with a cache paired to it
        calib = calibration_cache(bundle, files, cache)
        if not calib.is_file() and not kw.get("calib_data"):
            raise ConfigError(
                f"{bundle.path}: INT8 on the DLA is calibrated on this device (the DLA runs no Q/DQ "
                f"model): pass --calib-data data.yaml once; the cache it writes ({calib}) serves "
                "later builds of this model"
            )
        return EngineOptions(
            onnx=fp32, out=out, int8=True, fp16=True, dla_core=dla_core, calib_cache=calib, **kw
        )
    return EngineOptions(onnx=fp32, out=out, fp16=precision == "fp16", dla_core=dla_core, **kw)


def calibration_cache(bundle: Bundle, files: Path, cache: Optional[Path]) -> Path:
    """The bundle's calibration cache when it is paired with its FP32 model (open_bundle checked the
    pairing), else ``<cache root>/calib/<fp32 sha256[:16]>.calib.cache`` (written by a calibrating build)."""
    cal = bundle.manifest.get("calibration") or {}
    fp32 = bundle.models["fp32"]
    if cal.get("model") == fp32:
        return files / cal["cache"]
    sha = bundle.manifest["files"][fp32]["sha256"]
    path = bundle.cache_root(cache) / "calib" / f"{sha[:16]}.calib.cache"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cached_engine_ok(engine: Path, onnx: Path) -> bool:
    """True when ``engine`` exists and its sidecar says it was built from this very ``onnx``."""
    if not engine.is_file() or not sidecar_path(engine).is_file():
        return False
    src = (ModelCard.load(engine).engine or {}).get("source_onnx") or {}
    return src.get("sha256") == sha256_file(onnx)


def _device(device: Optional[dict]) -> dict:
    if device is not None:
        return device
    from ..runtime.backends import BackendUnavailable
    from ..runtime.backends.tensorrt import device_identity

    try:
        return device_identity()
    except BackendUnavailable as e:
        raise ExportError(f"cannot build an engine here: {e}") from None


def build_bundle_engine(
    bundle_path: str | Path,
    build: Callable[..., Any],
    trt: Any,
    precision: str = "auto",
    dla_core: Optional[int] = None,
    cache: Optional[Path] = None,
    rebuild: bool = False,
    device: Optional[dict] = None,
    **kw: Any,
) -> BundleBuild:
    """Verify the bundle, then build (or find) the engine of this device in its device cache.
    ``build``: :func:`defectdet.export.tensorrt.build_engine`; ``trt``: the tensorrt module (or a
    stand-in); ``device``: this machine's identity (default: asked through the TensorRT backend)."""
    bundle = open_bundle(bundle_path)
    dev = _device(device)
    version = str(trt.__version__)
    if dla_core is not None and dla_core >= int(dev.get("dla_cores", 0)):
        raise ConfigError(f"--dla-core {dla_core}: this device has {dev.get('dla_cores', 0)} DLA core(s)")
    precision = resolve_precision(bundle, precision, dla_core, version)
    files = bundle.extract(cache)
    key = engine_key(dev["gpu"], dev["compute_capability"], version, precision, dla_core)
    onnx_name = Path(bundle.models["int8" if precision == "int8" and dla_core is None else "fp32"])
    out = bundle.engines_dir(cache) / key / onnx_name.with_suffix(".engine").name
    opts = engine_options(bundle, files, precision, dla_core, out, cache, **kw)
    if not rebuild and cached_engine_ok(out, opts.onnx):
        return BundleBuild(out, key, precision, built=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine, _ = build(opts, trt=trt)
    return BundleBuild(engine, key, precision, built=True)


def dry_run(
    bundle_path: str | Path,
    inspect_onnx: Callable[[Path], Any],
    precision: str,
    dla_core: Optional[int],
    trt_version: str,
    cache: Optional[Path] = None,
    **kw: Any,
) -> str:
    """What ``build-engine`` would build for ``trt_version`` (no device needed): printable lines.
    ``inspect_onnx``: :func:`defectdet.export.tensorrt.inspect_onnx`."""
    bundle = open_bundle(bundle_path)
    precision = resolve_precision(bundle, precision, dla_core, trt_version)
    files = bundle.extract(cache)
    out = bundle.engines_dir(cache) / f"<this device>_trt{trt_version}_{precision}" / "model.engine"
    opts = engine_options(bundle, files, precision, dla_core, out, cache, **kw)
    plan = plan_build(opts, inspect_onnx(opts.onnx), trt_version)
    return (
        f"{bundle.label}: {precision} from {opts.onnx.relative_to(files)} on TensorRT {trt_version}: "
        f"builder flags {plan.builder_flags or '-'}, quantization {plan.quantization}\n  trtexec: "
        + shlex.join(trtexec_command(opts, plan))
    )
