"""``defectdet build-engine``: ONNX -> TensorRT ``.engine`` with the TensorRT Python API, on the Jetson.

Engines are tied to the GPU and the TensorRT version: build on the target. Three API families:

* **8.5** (JetPack 5.1.x: Xavier NX, AGX Xavier), **8.6** (JetPack 6.0) and **10.x** (JetPack 6.1/6.2
  ship 10.3): weakly typed networks with precision builder flags (8.5 builds as 8.6 does: same ONNX
  opset limit, 17, and the same builder calls; the sources are cited in :mod:`.engine_plan`).
  FP16 = the FP16 flag. INT8 from a Q/DQ model (``defectdet quantize``) = explicit quantization
  (INT8 flag; add FP16 for the float layers). INT8 from an FP32 model = the implicit path:
  ``IInt8EntropyCalibrator2`` fed by pycuda with an on-disk cache (deprecated since 10.1; the only
  INT8 route onto the DLA, which does not run Q/DQ networks).
* **11.x**: strongly typed networks only; precision flags and calibrators are gone. INT8 comes
  from a Q/DQ model, FP16 from an FP16-typed ONNX (``defectdet export --half``). The implicit
  path is refused with a message. The DLA: none in 11.0-11.3, Windows on ARM only in 11.4.0;
  11.4.1 restored it on Jetson AGX Orin (JetPack 7.2.2 or later), strongly typed, so from 11.4.1 a
  DLA build takes an FP16-typed ONNX (GPU fallback as in 10.x); earlier 11.x releases refuse it.

An ONNX whose input has dynamic dimensions (from elsewhere: ``defectdet export`` writes static
ones) needs ``--shape N x C x H x W``: the builder adds an optimisation profile with min = opt =
max = that shape; without it the build stops naming the input and its dynamic dimensions.

Implicit INT8 keeps its calibration cache on disk (``--calib-cache``, default
``<model stem>.calib.cache``); the printed ``trtexec`` line reads it with ``--calib`` (trtexec cannot
calibrate from images), so run ``build-engine`` once to write it before using that line.

Everything that decides *what* to build (:func:`plan_build`, :func:`trtexec_command`, in
:mod:`.engine_plan`) is plain Python, testable without TensorRT; ``tensorrt`` and ``pycuda`` are imported only
inside :func:`build_engine` and the calibrator (:mod:`defectdet.export.calibration`). Every ONNX-parser
error is logged before raising.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..artifact import (
    ModelCard,
    OnnxMissing,
    has_qdq,
    io_shapes,
    load_onnx,
    opset_version,
    sha256_file,
    sidecar_path,
    sniff_onnx,
)
from ..config import atomic_write_bytes
from ..errors import ConfigError
from . import ExportError
from .calib_cache import cache_identity, engine_entry, replay_cache
from .engine_plan import (  # noqa: F401  (re-exported: the planning API lives beside the builder)
    DLA_RESTORED,
    BuildPlan,
    EngineOptions,
    ModelInfo,
    default_calib_cache,
    parse_version,
    plan_build,
    release,
    trtexec_command,
)

# ----------------------------------------------------------------------------- model facts
_UINT8, _FLOAT16 = 2, 10  # onnx.TensorProto.UINT8 / FLOAT16


def inspect_onnx(path: Path) -> ModelInfo:
    """Q/DQ, FP16 typing, opset and input of an ONNX (with ``onnx`` when installed, else the sidecar);
    a file that is no ONNX model is refused in one line (:func:`~defectdet.artifact.load_onnx`)."""
    sniff_onnx(path)  # empty, text, zip, engine, random bytes: refused even without the onnx package
    side = sidecar_path(path)
    card = ModelCard.load(path, missing_ok=True)
    info = ModelInfo(gate=card.gate_decision)
    try:
        m = load_onnx(path, weights=False)
    except OnnxMissing:
        if not side.is_file():
            raise ConfigError(
                f"{path}: neither the `onnx` package nor {side.name} is here to describe the model"
            ) from None
        prec = card.precision or "fp32"
        info.qdq, info.fp16_typed, info.opset = prec.startswith("int8"), prec == "fp16", card.opset or 0
        info.uint8_qdq = prec == "int8-qdq-cpu"
        info.input_name = card.input_name or info.input_name
        info.input_shape = card.input_shape or info.input_shape
        return info
    info.qdq = has_qdq(m)
    zero_points = {n.input[2] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    info.uint8_qdq = any(t.name in zero_points and t.data_type == _UINT8 for t in m.graph.initializer)
    info.fp16_typed = any(t.data_type == _FLOAT16 for t in m.graph.initializer)
    info.opset = opset_version(m)
    name, shape, _, _ = io_shapes(m)
    info.input_name, info.input_shape = name, tuple(shape)
    return info


# ----------------------------------------------------------------------------- TensorRT calls
def import_tensorrt() -> Any:
    """``import tensorrt`` or an ExportError saying where it comes from."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError from a library it loads (libcuda, libnvinfer)
        from ..runtime.backends.tensorrt import import_failure

        raise ExportError(
            f"tensorrt is not importable ({import_failure('tensorrt', e)}): build on the Jetson, "
            "whose JetPack ships it, or run the trtexec line printed above there"
        ) from None
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
    raise ExportError(
        f"{onnx_path}: TensorRT's ONNX parser failed with {len(errors)} error(s); first: {first}"
    )


def _configure(
    trt: Any, builder: Any, opts: EngineOptions, plan: BuildPlan, info: ModelInfo
) -> tuple[Any, Any]:
    """(a builder config with the plan's memory limit, flags, DLA and calibrator; the calibrator or None)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.dla_core is not None:
        if builder.num_DLA_cores <= plan.dla_core:
            raise ExportError(
                f"--dla-core {plan.dla_core}: this device has {builder.num_DLA_cores} DLA core(s) "
                "(Orin Nano has none)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    profile = calibrator = None
    if plan.profile:
        name, shape = plan.profile
        profile = builder.create_optimization_profile()
        profile.set_shape(name, min=shape, opt=shape, max=shape)
        if config.add_optimization_profile(profile) < 0:
            raise ExportError(
                f"{opts.onnx}: TensorRT refused the optimisation profile {name}:{'x'.join(map(str, shape))}"
            )
    if plan.quantization == "implicit":
        from .calibration import tensorrt_calibrator

        shape = plan.profile[1] if plan.profile else info.input_shape
        data = None if plan.calib_replay else opts.calib_data  # a replayed cache needs no images
        calibrator = tensorrt_calibrator(
            trt,
            opts.onnx,
            shape,
            data,
            opts.calib_images,
            plan.calib_cache,
            replay=plan.calib_replay,
            identity=_calib_identity(opts, plan, info),
        )
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)  # a dynamic input calibrates at the profile's shape
    return config, calibrator


def build_engine(opts: EngineOptions, trt: Any = None) -> tuple[Path, BuildPlan]:
    """Build and save the engine plus its sidecar; returns (engine path, plan)."""
    onnx_path = Path(opts.onnx)
    info = inspect_onnx(onnx_path)
    if not sidecar_path(onnx_path).is_file():
        raise ConfigError(
            f"{sidecar_path(onnx_path)}: missing; copy the sidecar JSON along with {onnx_path.name}"
        )
    if trt is None:
        try:
            trt = import_tensorrt()
        except ExportError:
            guess = plan_build(opts, info, "10.3")  # JetPack 6.1/6.2
            print(
                "defectdet build-engine: on a JetPack 6.1/6.2 device: "
                + shlex.join(trtexec_command(opts, guess))
            )
            raise
    plan = plan_build(opts, info, trt.__version__)
    print("defectdet build-engine: equivalent: " + shlex.join(trtexec_command(opts, plan)))
    for note in plan.notes:
        print(f"defectdet build-engine: note: {note}")
    if plan.quantization == "implicit":
        # TensorRT replays a cache before asking for batches: only this model's cache may be offered
        plan.calib_replay = replay_cache(
            plan.calib_cache, _calib_identity(opts, plan, info), opts.calib_data is not None
        )
        import_pycuda_autoinit()  # the calibrator's CUDA context, current before the builder exists
    logger = trt.Logger(trt.Logger.VERBOSE if opts.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)
    config, calibrator = _configure(trt, builder, opts, plan, info)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.failure is not None:
        raise calibrator.failure  # an image failed mid-calibration: no engine from the batches before it
    if serialized is None:
        raise ExportError(
            f"{onnx_path}: TensorRT {plan.version} failed to build the engine (see its log above)"
        )
    engine = atomic_write_bytes(opts.engine_path(), bytes(serialized))
    write_engine_sidecar(opts, plan, engine)
    return engine, plan


def _calib_identity(opts: EngineOptions, plan: BuildPlan, info: ModelInfo) -> dict:
    shape = plan.profile[1] if plan.profile else info.input_shape
    return cache_identity(Path(opts.onnx), shape, plan.version)


def import_pycuda_autoinit() -> None:
    """``import pycuda.autoinit`` (creates the CUDA context), failing in one line that keeps the cause."""
    try:
        import pycuda.autoinit  # noqa: F401
    except Exception as e:  # ImportError, or pycuda's own error from cuInit (no GPU, no driver)
        from ..runtime.backends.tensorrt import import_failure

        raise ExportError(
            f"implicit INT8 calibration needs pycuda and a CUDA device: {import_failure('pycuda', e)}; "
            "pip install 'defectdet[jetson]' on the Jetson"
        ) from None


def write_engine_sidecar(opts: EngineOptions, plan: BuildPlan, engine: Path) -> Path:
    """``<engine stem>.json``: the ONNX's card plus an ``engine`` section. When the engine shares
    the ONNX's stem (the default) the sidecar is the same file and keeps the ONNX's ``precision``."""
    src_side, dst_side = sidecar_path(opts.onnx), sidecar_path(engine)
    card = ModelCard.load(opts.onnx)
    section = {
        "path": engine.name,
        "precision": plan.precision,
        "tensorrt": plan.version,
        "quantization": plan.quantization,
        "dla_core": plan.dla_core,
        "input_shape": list(plan.profile[1]) if plan.profile else None,
        "workspace_mb": opts.workspace_mb,
        "builder_flags": plan.builder_flags,
        "source_onnx": {"path": str(Path(opts.onnx).resolve()), "sha256": sha256_file(opts.onnx)},
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if plan.quantization == "implicit" and plan.calib_cache and Path(plan.calib_cache).is_file():
        section["calibration_cache"] = engine_entry(plan.calib_cache, plan.calib_replay)
    same = dst_side.resolve() == src_side.resolve()
    return card.replace(engine=section, **({} if same else {"precision": plan.precision})).save(engine)


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    """Built from :data:`defectdet.settings.export.BUILD_ENGINE` (each option declared there once)."""
    from ..settings.export import BUILD_ENGINE
    from ..settings.options import parser

    return parser(
        BUILD_ENGINE,
        "Build a TensorRT engine from an ONNX model on the Jetson (TensorRT 8.5 / 8.6 / 10.x / 11.x); prints "
        "the trtexec equivalent.",
        [
            (
                0,
                "the engine and its sidecar written (--dry-run: the plan printed); "
                "for a bundle: also when its device cache already had it",
            ),
            (2, "the build failed, or a bad option, model or bundle (one line on stderr)"),
        ],
        before="defectdet build-engine model.bundle: builds this "
        "device's engine into the bundle's device cache (docs/bundle.md).",
    )


def _bundle_cli(a: argparse.Namespace) -> int:
    """``build-engine model.bundle``: :mod:`.bundle_engine`."""
    from .bundle_engine import build_bundle_engine, dry_run

    if a.model or a.out or a.shape or a.calib_cache:
        raise ConfigError(
            "a bundle carries its models: --model, --out, --shape and --calib-cache are for an .onnx"
        )
    kw = {
        "workspace_mb": a.workspace,
        "calib_data": Path(a.calib_data) if a.calib_data else None,
        "calib_images": a.calib_images,
        "verbose": a.verbose,
        "force": a.force,
    }
    cache = Path(a.cache_dir) if a.cache_dir else None
    if a.dry_run:
        version = a.trt_version or import_tensorrt().__version__
        plan = dry_run(a.bundle, inspect_onnx, a.precision, a.dla_core, version, cache, **kw)
        print(f"defectdet build-engine: {plan}")
        return 0
    try:
        trt = import_tensorrt()
    except ExportError:
        print(
            "defectdet build-engine: on a JetPack 6.1/6.2 device: "
            + dry_run(a.bundle, inspect_onnx, a.precision, a.dla_core, "10.3", cache, **kw)
        )
        raise
    r = build_bundle_engine(a.bundle, build_engine, trt, a.precision, a.dla_core, cache, a.rebuild, **kw)
    state = "built" if r.built else "already in the device cache (--rebuild to build again)"
    print(f"defectdet build-engine: {r.engine} ({r.precision}, key {r.key}): {state}")
    return 0


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x640x640"`` -> ``(1, 3, 640, 640)``."""
    if not re.fullmatch(r"\d+(x\d+)+", text.strip()):
        raise ConfigError(f"--shape {text}: expected sizes joined by x, e.g. 1x3x640x640")
    return tuple(int(d) for d in text.strip().split("x"))


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet build-engine``."""
    a = _parser().parse_args(argv)
    if a.bundle:
        return _bundle_cli(a)
    if not a.model:
        raise ConfigError("give a bundle (defectdet build-engine model.bundle) or --model model.onnx")
    from ..artifact.bundle import is_bundle

    if is_bundle(a.model):
        raise ConfigError(
            f"--model {a.model} is a bundle: build it with `defectdet build-engine {a.model}` (its engine "
            "goes into the bundle's device cache)"
        )
    opts = EngineOptions(
        onnx=Path(a.model),
        out=Path(a.out) if a.out else None,
        fp16=a.fp16,
        int8=a.int8,
        workspace_mb=a.workspace,
        dla_core=a.dla_core,
        calib_cache=Path(a.calib_cache) if a.calib_cache else None,
        calib_data=Path(a.calib_data) if a.calib_data else None,
        calib_images=a.calib_images,
        force=a.force,
        verbose=a.verbose,
        shape=parse_shape(a.shape) if a.shape else None,
    )
    if a.dry_run:
        version = a.trt_version or import_tensorrt().__version__
        plan = plan_build(opts, inspect_onnx(opts.onnx), version)
        print(
            f"defectdet build-engine: TensorRT {version}: network flags {plan.network_flags or '-'}, builder "
            f"flags {plan.builder_flags or '-'}, quantization {plan.quantization}, precision {plan.precision}"
        )
        for note in plan.notes:
            print(f"  note: {note}")
        print("  trtexec: " + shlex.join(trtexec_command(opts, plan)))
        return 0
    engine, plan = build_engine(opts)
    print(
        f"defectdet build-engine: {engine} ({plan.precision}, TensorRT {plan.version}); metadata "
        f"{engine.with_suffix('.json')}"
    )
    return 0
