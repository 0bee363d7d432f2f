"""``defectdet build-engine``: ONNX -> TensorRT ``.engine`` with the TensorRT Python API, on the Jetson.

Engines are tied to the GPU and the TensorRT version: build on the target. Three API families:

* **8.6** (JetPack 6.0) and **10.x** (JetPack 6.1/6.2 ship 10.3): weakly typed networks with
  precision builder flags. FP16 = the FP16 flag. INT8 from a Q/DQ model (``defectdet quantize``) =
  explicit quantization (INT8 flag; add FP16 for the float layers). INT8 from an FP32 model = the
  implicit path: ``IInt8EntropyCalibrator2`` fed by pycuda with an on-disk cache (deprecated since
  10.1; the only INT8 route onto the DLA, which does not run Q/DQ networks).
* **11.x**: strongly typed networks only; precision flags and calibrators are gone. INT8 comes
  from a Q/DQ model, FP16 from an FP16-typed ONNX (``defectdet export --half``). The implicit
  path and the DLA (no release of 11.0-11.4 supports it) are refused with a message.

Everything that decides *what* to build (:func:`plan_build`, :func:`trtexec_command`) is plain
Python, testable without TensorRT; ``tensorrt`` and ``pycuda`` are imported only inside
:func:`build_engine` and the calibrator (:mod:`defectdet.export.calibration`). Every ONNX-parser
error is logged before raising.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..artifact import (
    TRT86_MAX_OPSET,
    has_qdq,
    io_shapes,
    opset_version,
    read_sidecar,
    sha256_file,
    sidecar_path,
    write_sidecar,
)
from ..cli import exit_statuses
from ..config import atomic_write_bytes
from ..errors import ConfigError
from . import ExportError

GATE_OK = ("pass", "forced")


@dataclass
class EngineOptions:
    """What the user asked for (``defectdet build-engine`` flags)."""

    onnx: Path
    out: Path | None = None  # default: <onnx stem>.engine beside the ONNX
    fp16: bool = False
    int8: bool = False
    workspace_mb: int = 1024  # builder scratch memory limit (MiB)
    dla_core: int | None = None  # DLA core (AGX/NX Orin have 2; Orin Nano has none)
    calib_cache: Path | None = None  # implicit INT8: calibration cache read / written here
    calib_data: Path | None = None  # implicit INT8: data.yaml whose train images calibrate
    calib_images: int = 500
    force: bool = False  # build from a Q/DQ model the accuracy gate did not pass
    verbose: bool = False

    def engine_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.onnx).with_suffix(".engine")


@dataclass
class ModelInfo:
    """What the ONNX model is, as far as the builder cares."""

    qdq: bool = False  # has QuantizeLinear/DequantizeLinear: explicit INT8
    uint8_qdq: bool = False  # UINT8 zero-points: onnxruntime's CPU form, not TensorRT's symmetric INT8
    fp16_typed: bool = False  # FP16 initializers/tensors (export --half)
    opset: int = 0
    input_name: str = "images"
    input_shape: tuple[int, ...] = (1, 3, 640, 640)
    gate: str | None = None  # the accuracy gate's decision from the sidecar (None: never ran)


@dataclass
class BuildPlan:
    """How to build: the resolved TensorRT calls, derived from options, model and version."""

    version: str
    network_flags: list[str] = field(default_factory=list)  # NetworkDefinitionCreationFlag names
    builder_flags: list[str] = field(default_factory=list)  # BuilderFlag names
    quantization: str = "none"  # none | explicit (Q/DQ) | implicit (calibrator)
    dla_core: int | None = None
    precision: str = "fp32"  # recorded in the sidecar
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- pure planning
def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> ``(10, 3)``."""
    m = re.match(r"^\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise ConfigError(f"TensorRT version {version!r}: expected MAJOR.MINOR[.PATCH]")
    return int(m.group(1)), int(m.group(2))


def _plan_strong(opts: EngineOptions, info: ModelInfo, plan: BuildPlan) -> BuildPlan:
    """TensorRT >= 11: strongly typed; precision comes from the ONNX's types and Q/DQ nodes."""
    v = plan.version
    if opts.calib_cache or opts.calib_data or (opts.int8 and not info.qdq):
        raise ConfigError(f"TensorRT {v} removed implicit INT8 calibration: quantize with `defectdet quantize` "
                          "and build the Q/DQ model.int8.onnx")
    if opts.fp16 and not info.fp16_typed:
        raise ConfigError(f"TensorRT {v} has no FP16 builder flag: export an FP16-typed ONNX with "
                          "`defectdet export --half` and build that")
    if opts.dla_core is not None:
        raise ConfigError(f"TensorRT {v} does not support the DLA (10.7 was the last release with it); "
                          "build with JetPack's TensorRT 8.6 / 10.3")
    plan.quantization = "explicit" if info.qdq else "none"
    plan.precision = "int8-qdq" if info.qdq else ("fp16" if info.fp16_typed else "fp32")
    if info.qdq:
        plan.notes.append("strongly typed: layers outside Q/DQ pairs run in the ONNX's float type")
    return plan


def _plan_weak(opts: EngineOptions, info: ModelInfo, plan: BuildPlan, major: int, minor: int) -> BuildPlan:
    """TensorRT 8.6-10.x: weakly typed; precision builder flags, optional implicit calibrator."""
    plan.network_flags = ["EXPLICIT_BATCH"] if major < 10 else []  # always explicit from 10.0
    flags = plan.builder_flags
    if info.qdq:
        if opts.calib_cache or opts.calib_data:
            raise ConfigError(f"{opts.onnx}: a Q/DQ model carries its own scales; --calib-cache/--calib-data "
                              "are for implicit calibration of an FP32 model")
        if opts.dla_core is not None:
            raise ConfigError(f"{opts.onnx}: the DLA does not run Q/DQ (explicitly quantized) networks; build the "
                              "FP32 model.onnx with --int8 --calib-cache (implicit INT8) or --fp16 for the DLA")
        plan.quantization, plan.precision = "explicit", "int8-qdq"
        flags.append("INT8")
        if not opts.fp16:
            plan.notes.append("add --fp16 so the layers kept in float (the head's outputs) run in FP16, not FP32")
    elif opts.int8:
        cache = Path(opts.calib_cache) if opts.calib_cache else None
        if not opts.calib_data and not (cache and cache.is_file()):
            raise ConfigError("implicit INT8 from an FP32 model needs --calib-data data.yaml (or an existing "
                              "--calib-cache); or build the Q/DQ model from `defectdet quantize`")
        plan.quantization, plan.precision = "implicit", "int8-calibrated"
        flags.append("INT8")
        if (major, minor) >= (10, 1):
            plan.notes.append("implicit INT8 calibration is deprecated since TensorRT 10.1 (removed in 11)")
    if opts.fp16 or info.fp16_typed:
        flags.append("FP16")
        if info.fp16_typed and not opts.fp16:
            plan.notes.append("FP16-typed ONNX: FP16 flag set so the builder accepts its FP16 tensors")
        plan.precision = "fp16" if plan.precision == "fp32" else plan.precision + "+fp16"
    if opts.dla_core is not None:
        if not flags:
            raise ConfigError("the DLA runs FP16 or INT8 only: add --fp16 (or --int8 with calibration)")
        flags.append("GPU_FALLBACK")
        plan.dla_core = opts.dla_core
    return plan


def plan_build(opts: EngineOptions, info: ModelInfo, trt_version: str) -> BuildPlan:
    """Validate options against the model and TensorRT version; raise ConfigError with the fix."""
    major, minor = parse_version(trt_version)
    if (major, minor) < (8, 6):
        raise ConfigError(f"TensorRT {trt_version}: 8.6 or newer expected (JetPack 6.0 ships 8.6.2)")
    if opts.workspace_mb < 1:
        raise ConfigError(f"--workspace {opts.workspace_mb}: expected a positive number of MiB")
    if opts.dla_core is not None and opts.dla_core < 0:
        raise ConfigError(f"--dla-core {opts.dla_core}: expected 0 or 1 (AGX/NX Orin)")
    if major == 8 and info.opset > TRT86_MAX_OPSET:
        raise ConfigError(f"{opts.onnx}: opset {info.opset}, TensorRT 8.6 parses <= {TRT86_MAX_OPSET}; re-export with --opset 17")
    if info.uint8_qdq:
        raise ConfigError(f"{opts.onnx}: UINT8 Q/DQ (quantize --target cpu) is not TensorRT's form; "
                          "quantize with --target tensorrt (symmetric INT8)")
    if info.qdq and info.gate not in GATE_OK and not opts.force:
        state = f"its gate decision is {info.gate!r}" if info.gate else "the accuracy gate never ran on it"
        raise ConfigError(f"{opts.onnx}: {state}; run `defectdet gate` (or pass --force to build it anyway)")
    plan = BuildPlan(version=str(trt_version))
    if major >= 11:
        if major > 11:
            plan.notes.append(f"TensorRT {major}.x is newer than this builder knows; treated as 11.x")
        return _plan_strong(opts, info, plan)
    return _plan_weak(opts, info, plan, major, minor)


def trtexec_command(opts: EngineOptions, plan: BuildPlan) -> list[str]:
    """The ``trtexec`` line that builds the same engine (for logs, or a machine without Python TRT)."""
    cmd = ["trtexec", f"--onnx={opts.onnx}", f"--saveEngine={opts.engine_path()}",
           f"--memPoolSize=workspace:{opts.workspace_mb}"]  # MiB in 8.6 and later
    cmd += [f"--{f.lower()}" for f in plan.builder_flags if f in ("FP16", "INT8")]
    if plan.quantization == "implicit" and opts.calib_cache:
        cmd.append(f"--calib={opts.calib_cache}")  # trtexec reads a cache; it cannot calibrate from images
    if plan.dla_core is not None:
        cmd += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if opts.verbose:
        cmd.append("--verbose")
    return cmd


# ----------------------------------------------------------------------------- model facts
def inspect_onnx(path: Path) -> ModelInfo:
    """Q/DQ, FP16 typing, opset and input of an ONNX (with ``onnx`` when installed, else the sidecar)."""
    side = sidecar_path(path)
    meta = read_sidecar(side) if side.is_file() else {}
    info = ModelInfo(gate=(meta.get("gate") or {}).get("decision"))
    try:
        import onnx
    except ImportError:
        if not meta:
            raise ConfigError(f"{path}: neither the `onnx` package nor {side.name} is here to describe the model") from None
        prec = str(meta.get("precision", "fp32"))
        info.qdq, info.fp16_typed, info.opset = prec.startswith("int8"), prec == "fp16", int(meta.get("opset", 0))
        info.uint8_qdq = prec == "int8-qdq-cpu"
        info.input_name = meta.get("input_name", info.input_name)
        info.input_shape = tuple(meta.get("input_shape", info.input_shape))
        return info
    m = onnx.load(str(path), load_external_data=False)
    info.qdq = has_qdq(m)
    zero_points = {n.input[2] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    info.uint8_qdq = any(t.name in zero_points and t.data_type == onnx.TensorProto.UINT8 for t in m.graph.initializer)
    info.fp16_typed = any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    info.opset = opset_version(m)
    name, shape, _, _ = io_shapes(m)
    info.input_name, info.input_shape = name, tuple(shape)
    return info


# ----------------------------------------------------------------------------- TensorRT calls
def import_tensorrt() -> Any:
    """``import tensorrt`` or an ExportError saying where it comes from."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ExportError(f"tensorrt is not importable ({e}): build on the Jetson, whose JetPack ships it, "
                          "or run the trtexec line printed above there") from None
    return trt


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
    """Parse the ONNX; log every parser error, then raise."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    for i, err in enumerate(errors, 1):
        print(f"defectdet build-engine: ONNX parser error {i}/{len(errors)}: {err}", file=sys.stderr)
    first = errors[0].desc() if errors and hasattr(errors[0], "desc") else "no error reported"
    raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed with {len(errors)} error(s); first: {first}")


def _configure(trt: Any, builder: Any, opts: EngineOptions, plan: BuildPlan, info: ModelInfo) -> Any:
    """A builder config carrying the plan's memory limit, flags, DLA and calibrator."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.dla_core is not None:
        if builder.num_DLA_cores <= plan.dla_core:
            raise ExportError(f"--dla-core {plan.dla_core}: this device has {builder.num_DLA_cores} DLA core(s) "
                              "(Orin Nano has none)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.quantization == "implicit":
        from .calibration import tensorrt_calibrator

        config.int8_calibrator = tensorrt_calibrator(trt, opts.onnx, info.input_shape, opts.calib_data,
                                                     opts.calib_images, opts.calib_cache)
    return config


def build_engine(opts: EngineOptions, trt: Any = None) -> tuple[Path, BuildPlan]:
    """Build and save the engine plus its sidecar; returns (engine path, plan)."""
    onnx_path = Path(opts.onnx)
    if not onnx_path.is_file():
        raise ConfigError(f"{onnx_path}: model not found; expected an .onnx from `defectdet export` / `quantize`")
    info = inspect_onnx(onnx_path)
    if not sidecar_path(onnx_path).is_file():
        raise ConfigError(f"{sidecar_path(onnx_path)}: missing; copy the sidecar JSON along with {onnx_path.name}")
    if trt is None:
        try:
            trt = import_tensorrt()
        except ExportError:
            guess = plan_build(opts, info, "10.3")  # JetPack 6.1/6.2
            print("defectdet build-engine: on a JetPack 6.1/6.2 device: " + shlex.join(trtexec_command(opts, guess)))
            raise
    plan = plan_build(opts, info, trt.__version__)
    print("defectdet build-engine: equivalent: " + shlex.join(trtexec_command(opts, plan)))
    for note in plan.notes:
        print(f"defectdet build-engine: note: {note}")
    if plan.quantization == "implicit":
        import pycuda.autoinit  # noqa: F401  (the calibrator's CUDA context, current before the builder exists)
    logger = trt.Logger(trt.Logger.VERBOSE if opts.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)
    config = _configure(trt, builder, opts, plan, info)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT {plan.version} failed to build the engine (see its log above)")
    engine = atomic_write_bytes(opts.engine_path(), bytes(serialized))
    write_engine_sidecar(opts, plan, engine)
    return engine, plan


def write_engine_sidecar(opts: EngineOptions, plan: BuildPlan, engine: Path) -> Path:
    """``<engine stem>.json``: the ONNX's metadata plus an ``engine`` section. When the engine shares
    the ONNX's stem (the default) the sidecar is the same file and keeps the ONNX's ``precision``."""
    src_side, dst_side = sidecar_path(opts.onnx), sidecar_path(engine)
    meta = read_sidecar(src_side)
    meta["engine"] = {
        "path": engine.name, "precision": plan.precision, "tensorrt": plan.version, "quantization": plan.quantization,
        "dla_core": plan.dla_core, "workspace_mb": opts.workspace_mb, "builder_flags": plan.builder_flags,
        "source_onnx": {"path": str(Path(opts.onnx).resolve()), "sha256": sha256_file(opts.onnx)},
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if dst_side.resolve() != src_side.resolve():
        meta["precision"] = plan.precision
    return write_sidecar(dst_side, meta)


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="defectdet build-engine", description="Build a TensorRT engine from an ONNX "
                                "model on the Jetson (TensorRT 8.6 / 10.x / 11.x); prints the trtexec equivalent.",
                                **exit_statuses((0, "the engine and its sidecar written (--dry-run: the plan printed)"),
                                                (2, "the build failed, or a bad option or model (one line on stderr)")))
    p.add_argument("--model", required=True, help="model.onnx, model.fp16.onnx or model.int8.onnx (Q/DQ)")
    p.add_argument("--out", default=None, help="engine path (default: <model stem>.engine beside the model)")
    p.add_argument("--fp16", action="store_true", help="FP16 kernels (8.6/10.x flag; 11.x: needs export --half)")
    p.add_argument("--int8", action="store_true", help="INT8: explicit from a Q/DQ model, or implicit calibration (<= 10.x)")
    p.add_argument("--workspace", type=int, default=1024, help="builder workspace limit in MiB (default 1024)")
    p.add_argument("--dla-core", type=int, default=None, help="run on this DLA core with GPU fallback (AGX/NX Orin)")
    p.add_argument("--calib-cache", default=None, help="implicit INT8 calibration cache (read if present, else written)")
    p.add_argument("--calib-data", default=None, help="implicit INT8: data.yaml whose train images calibrate")
    p.add_argument("--calib-images", type=int, default=500, help="implicit INT8 calibration images (default 500)")
    p.add_argument("--force", action="store_true", help="build a Q/DQ model that has not passed the accuracy gate")
    p.add_argument("--verbose", action="store_true", help="TensorRT verbose log")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan and trtexec line; build nothing")
    p.add_argument("--trt-version", default=None, help="with --dry-run: plan for this TensorRT version (e.g. 10.3)")
    return p


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet build-engine``."""
    a = _parser().parse_args(argv)
    opts = EngineOptions(
        onnx=Path(a.model), out=Path(a.out) if a.out else None, fp16=a.fp16, int8=a.int8, workspace_mb=a.workspace,
        dla_core=a.dla_core, calib_cache=Path(a.calib_cache) if a.calib_cache else None,
        calib_data=Path(a.calib_data) if a.calib_data else None, calib_images=a.calib_images, force=a.force,
        verbose=a.verbose,
    )
    if a.dry_run:
        if not opts.onnx.is_file():
            raise ConfigError(f"{opts.onnx}: model not found")
        version = a.trt_version or import_tensorrt().__version__
        plan = plan_build(opts, inspect_onnx(opts.onnx), version)
        print(f"defectdet build-engine: TensorRT {version}: network flags {plan.network_flags or '-'}, builder flags "
              f"{plan.builder_flags or '-'}, quantization {plan.quantization}, precision {plan.precision}")
        for note in plan.notes:
            print(f"  note: {note}")
        print("  trtexec: " + shlex.join(trtexec_command(opts, plan)))
        return 0
    engine, plan = build_engine(opts)
    print(f"defectdet build-engine: {engine} ({plan.precision}, TensorRT {plan.version}); metadata {engine.with_suffix('.json')}")
    return 0
