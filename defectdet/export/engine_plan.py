"""What ``defectdet build-engine`` builds, decided in plain Python (no TensorRT needed): the options,
the model facts, and the plan (network and builder flags, quantization, DLA, optimisation profile,
calibration cache) for a TensorRT version, plus the equivalent ``trtexec`` line. The version rules
are described in :mod:`defectdet.export.tensorrt`, which calls these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..artifact import TRT86_MAX_OPSET
from ..errors import ConfigError

GATE_OK = ("pass", "forced")


@dataclass
class EngineOptions:
    """What the user asked for (``defectdet build-engine`` flags)."""

    onnx: Path
    out: Path | None = None  # default: <onnx stem>.engine beside the ONNX
    fp16: bool = False
    int8: bool = False
    workspace_mb: int = 1024  # builder scratch memory limit (MiB)
    dla_core: int | None = (
        None  # DLA core (AGX Orin, Orin NX 16 GB, AGX Xavier, Xavier NX have 2; Orin Nano none)
    )
    calib_cache: Path | None = None  # implicit INT8: calibration cache read / written here
    calib_data: Path | None = None  # implicit INT8: data.yaml whose train images calibrate
    calib_images: int = 500
    shape: tuple[int, ...] | None = (
        None  # input shape for an ONNX with dynamic dims (the optimisation profile)
    )
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
    calib_cache: Path | None = (
        None  # implicit INT8: the cache the calibrator writes and trtexec --calib reads
    )
    calib_replay: bool = False  # implicit INT8: the cache belongs to this model (calib_cache.replay_cache)
    profile: tuple[str, tuple[int, ...]] | None = None  # (input name, shape): min = opt = max
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- pure planning
def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> ``(10, 3)``."""
    return release(version)[:2]


def release(version: str) -> tuple[int, int, int]:
    """``"11.4.1.2"`` -> ``(11, 4, 1)``; a missing patch is 0."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise ConfigError(f"TensorRT version {version!r}: expected MAJOR.MINOR[.PATCH]")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


DLA_RESTORED = (11, 4, 1)  # 11.4.1: DLA on Jetson AGX Orin again (JetPack 7.2.2+), strongly typed
OLDEST = (8, 5)  # JetPack 5.1.x (Xavier NX / AGX Xavier) ships TensorRT 8.5.2
# What TensorRT 8.5 (JetPack 5.1.x) differs in for this builder, from the sources (release/8.5 = 8.5.2 tags):
# * ONNX opset: "TensorRT 8.5 supports operators up to Opset 17" (onnx/onnx-tensorrt 8.5-GA
#   docs/operators.md), the same line as 8.6-GA's; the 8.5-GA docs/Changelog.md adds UINT8 network I/O (so
#   `export --input uint8`, whose Cast UINT8 -> FLOAT the 8.5-GA builtin_op_importers.cpp Cast importer
#   accepts, parses there too).
# * Python builder API (NVIDIA/TensorRT 8.5.2 python/src/infer/pyCore.cpp): set_memory_pool_limit with
#   MemoryPoolType.WORKSPACE, BuilderFlag FP16 / INT8 / GPU_FALLBACK, DeviceType.DLA, config.DLA_core,
#   int8_calibrator, set_calibration_profile, add_optimization_profile, IOptimizationProfile.set_shape(input,
#   min, opt, max), Builder.num_DLA_cores, build_serialized_network, create_network(flags) with
#   NetworkDefinitionCreationFlag.EXPLICIT_BATCH (needed before 10.0), OnnxParser.parse_from_file / num_errors
#   / get_error / desc: all as on 8.6, so the plan and calls are the 8.6 ones.
# * trtexec (8.5.2 samples/common/sampleOptions.cpp): --memPoolSize=workspace:N in MiB (--workspace=N still
#   parsed, with a "deprecated by --memPoolSize" warning), --fp16, --int8, --best, --calib=<file> (reads a
#   cache), --useDLACore=N, --allowGPUFallback, --minShapes/--optShapes/--maxShapes; no --stronglyTyped (first
#   in 10.x; this line never prints it). So the trtexec line is the 8.6 one too.
PARSER_MAX_OPSET = {(8, 5): 17, (8, 6): TRT86_MAX_OPSET}  # onnx-tensorrt 8.5-GA / 8.6-GA docs/operators.md


def default_calib_cache(onnx: Path) -> Path:
    """``model.onnx`` -> ``model.calib.cache`` beside it."""
    return Path(onnx).with_suffix(".calib.cache")


def _plan_profile(opts: EngineOptions, info: ModelInfo) -> tuple[str, tuple[int, ...]] | None:
    """The optimisation profile a dynamic-shape input needs (from --shape); None for a static input."""
    name, dims = info.input_name, tuple(info.input_shape)
    dynamic = [i for i, d in enumerate(dims) if d is None or d <= 0]
    if opts.shape is None:
        if dynamic:
            raise ConfigError(
                f"{opts.onnx}: input {name!r} has dynamic dims {dynamic} (shape "
                f"{'x'.join('?' if i in dynamic else str(d) for i, d in enumerate(dims))}); "
                "pass --shape NxCxHxW (e.g. --shape 1x3x640x640) for its optimisation profile"
            )
        return None
    shape = tuple(int(d) for d in opts.shape)
    if (
        len(shape) != len(dims)
        or any(d < 1 for d in shape)
        or any(i not in dynamic and d != dims[i] for i, d in enumerate(shape))
    ):
        raise ConfigError(
            f"--shape {'x'.join(map(str, shape))}: input {name!r} is "
            f"{'x'.join('?' if i in dynamic else str(d) for i, d in enumerate(dims))}; "
            "expected its rank, positive sizes, and its fixed dims unchanged"
        )
    return (name, shape) if dynamic else None


def _plan_strong(opts: EngineOptions, info: ModelInfo, plan: BuildPlan) -> BuildPlan:
    """TensorRT >= 11: strongly typed; precision comes from the ONNX's types and Q/DQ nodes."""
    v = plan.version
    if opts.calib_cache or opts.calib_data or (opts.int8 and not info.qdq):
        raise ConfigError(
            f"TensorRT {v} removed implicit INT8 calibration: quantize with `defectdet quantize` "
            "and build the Q/DQ model.int8.onnx"
        )
    if opts.fp16 and not info.fp16_typed:
        raise ConfigError(
            f"TensorRT {v} has no FP16 builder flag: export an FP16-typed ONNX with "
            "`defectdet export --half` and build that"
        )
    if opts.dla_core is not None:
        if release(v) < DLA_RESTORED:
            raise ConfigError(
                f"TensorRT {v} has no DLA on Jetson (none in 11.0-11.3, 11.4.0 only on Windows on "
                "ARM; 11.4.1 restored it on AGX Orin): build with TensorRT 10.x (<= 10.7) or 11.4.1+"
            )
        if info.qdq or not info.fp16_typed:
            raise ConfigError(
                f"{opts.onnx}: a TensorRT {v} DLA build is strongly typed: it takes an FP16-typed ONNX "
                "(`defectdet export --half`), not an FP32 or Q/DQ one"
            )
        plan.builder_flags, plan.dla_core = ["GPU_FALLBACK"], opts.dla_core
    plan.quantization = "explicit" if info.qdq else "none"
    plan.precision = "int8-qdq" if info.qdq else ("fp16" if info.fp16_typed else "fp32")
    if info.qdq:
        plan.notes.append("strongly typed: layers outside Q/DQ pairs run in the ONNX's float type")
    return plan


def _plan_weak(opts: EngineOptions, info: ModelInfo, plan: BuildPlan, major: int, minor: int) -> BuildPlan:
    """TensorRT 8.5-10.x: weakly typed; precision builder flags, optional implicit calibrator."""
    plan.network_flags = ["EXPLICIT_BATCH"] if major < 10 else []  # always explicit from 10.0
    flags = plan.builder_flags
    if info.qdq:
        if opts.calib_cache or opts.calib_data:
            raise ConfigError(
                f"{opts.onnx}: a Q/DQ model carries its own scales; --calib-cache/--calib-data "
                "are for implicit calibration of an FP32 model"
            )
        if opts.dla_core is not None:
            raise ConfigError(
                f"{opts.onnx}: the DLA does not run Q/DQ (explicitly quantized) networks; build the "
                "FP32 model.onnx with --int8 --calib-cache (implicit INT8) or --fp16 for the DLA"
            )
        plan.quantization, plan.precision = "explicit", "int8-qdq"
        flags.append("INT8")
        if not opts.fp16:
            plan.notes.append(
                "add --fp16 so the layers kept in float (the head's outputs) run in FP16, not FP32"
            )
    elif opts.int8:
        cache = Path(opts.calib_cache) if opts.calib_cache else None
        if not opts.calib_data and not (cache and cache.is_file()):
            raise ConfigError(
                "implicit INT8 from an FP32 model needs --calib-data data.yaml (or an existing "
                "--calib-cache); or build the Q/DQ model from `defectdet quantize`"
            )
        plan.quantization, plan.precision = "implicit", "int8-calibrated"
        plan.calib_cache = cache or default_calib_cache(opts.onnx)
        if not plan.calib_cache.is_file():
            plan.notes.append(
                f"the trtexec line reads the calibration cache {plan.calib_cache}, which this build "
                "writes from --calib-data; trtexec cannot calibrate from images (without the cache it "
                "would build with dummy ranges)"
            )
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
    if (major, minor) < OLDEST:
        raise ConfigError(
            f"TensorRT {trt_version}: 8.5 or newer expected (JetPack 5.1.x ships 8.5.2, 6.0 ships 8.6.2); "
            "JetPack 5.0.x (8.4) and 4.x are not supported"
        )
    if opts.workspace_mb < 1:
        raise ConfigError(f"--workspace {opts.workspace_mb}: expected a positive number of MiB")
    if opts.dla_core is not None and opts.dla_core < 0:
        raise ConfigError(f"--dla-core {opts.dla_core}: expected 0 or 1 (AGX/NX Orin, AGX Xavier, Xavier NX)")
    limit = PARSER_MAX_OPSET.get((major, minor), TRT86_MAX_OPSET) if major == 8 else None
    if limit is not None and info.opset > limit:
        raise ConfigError(
            f"{opts.onnx}: opset {info.opset}, TensorRT {major}.{minor} parses <= {limit}; "
            f"re-export with `defectdet export --opset {limit}`"
        )
    if info.uint8_qdq:
        raise ConfigError(
            f"{opts.onnx}: UINT8 Q/DQ (quantize --target cpu) is not TensorRT's form; "
            "quantize with --target tensorrt (symmetric INT8)"
        )
    if info.qdq and info.gate not in GATE_OK and not opts.force:
        state = f"its gate decision is {info.gate!r}" if info.gate else "the accuracy gate never ran on it"
        raise ConfigError(f"{opts.onnx}: {state}; run `defectdet gate` (or pass --force to build it anyway)")
    plan = BuildPlan(version=str(trt_version), profile=_plan_profile(opts, info))
    if major >= 11:
        if major > 11:
            plan.notes.append(f"TensorRT {major}.x is newer than this builder knows; treated as 11.x")
        return _plan_strong(opts, info, plan)
    return _plan_weak(opts, info, plan, major, minor)


def trtexec_command(opts: EngineOptions, plan: BuildPlan) -> list[str]:
    """The ``trtexec`` line that builds the same engine (for logs, or a machine without Python TRT)."""
    cmd = [
        "trtexec",
        f"--onnx={opts.onnx}",
        f"--saveEngine={opts.engine_path()}",
        f"--memPoolSize=workspace:{opts.workspace_mb}",
    ]  # MiB in 8.5, 8.6 and 10.x (unsuffixed)
    cmd += [f"--{f.lower()}" for f in plan.builder_flags if f in ("FP16", "INT8")]
    if plan.quantization == "implicit":
        cmd.append(f"--calib={plan.calib_cache}")  # trtexec reads a cache; it cannot calibrate from images
    if plan.profile:
        name, shape = plan.profile
        dims = "x".join(map(str, shape))
        cmd += [f"--{k}Shapes={name}:{dims}" for k in ("min", "opt", "max")]
    if plan.dla_core is not None:
        cmd += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if opts.verbose:
        cmd.append("--verbose")
    return cmd
