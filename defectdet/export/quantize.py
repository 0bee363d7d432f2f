"""``defectdet quantize``: FP32 ONNX -> ``model.int8.onnx``, explicit INT8 (Q/DQ) TensorRT builds from.

onnxruntime.quantization ``quantize_static`` in the TensorRT form: QDQ format, INT8 weights
(per-channel, symmetric) and activations (symmetric, zero-point 0), Q/DQ only on the inputs of
Conv/ConvTranspose/MatMul/Gemm (their outputs stay float: TensorRT fuses the next layer's Q), bias
not quantized, dedicated Q/DQ pairs. The detection head's last convolutions (class logits, box
distribution and the DFL integral) are kept in float: their outputs are the detector's outputs.
``float_sensitive`` N also keeps the N convolutions whose quantized input is noisiest in float
(mixed precision: TensorRT runs them in FP16 with ``--fp16``): after a first quantization, each
quantized conv's input is compared before and after its Q/DQ pair on calibration images
(onnxruntime.quantization.qdq_loss_debug), and the N with the lowest signal-to-quantization-noise
ratio are left out of the second. The opset is left as exported (17 by default), which TensorRT 8.5
and 8.6 parse.

Calibration images come from the data.yaml's train split (the gate evaluates on val), enriched in
defective images (``defect_fraction``, default half) so that rare-defect activations set the
ranges, not only clean parts; they are pre-processed exactly like the runtime does, with the
pre-processing the model's metadata records (:mod:`defectdet.export.calibration`). The accuracy gate
(:mod:`defectdet.export.gate`) runs after.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact import (
    ModelCard,
    Preprocess,
    RunInfo,
    embed_metadata,
    has_qdq,
    input_format,
    io_shapes,
    load_metadata,
    load_onnx,
    opset_version,
    props,
    save_onnx,
    sha256_file,
    sidecar_path,
)
from ..errors import ConfigError, DefectdetError
from ..settings.export import QUANTIZE
from . import ExportError
from .calibration import calibration_images, load_images, make_reader

METHODS = QUANTIZE["method"].choices  # ("entropy", "minmax", "percentile")
QUANT_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]  # what TensorRT runs in INT8 from Q/DQ inputs
TARGETS = QUANTIZE["target"].choices  # ("tensorrt", "cpu")
CHUNK = 16  # images per calibration batch: ranges/histograms are merged per batch, bounding memory


@dataclass
class QuantResult:
    """What ``quantize_onnx`` wrote and measured."""

    onnx: Path
    sidecar: Path
    report: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- graph inspection
def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _after_softmax(node: Any, prod: dict[str, Any]) -> bool:
    """True when a Conv's input comes from a Softmax through reshapes only (the DFL integral)."""
    n = prod.get(node.input[0])
    while n is not None and n.op_type in ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"):
        n = prod.get(n.input[0])
    return n is not None and n.op_type == "Softmax"


def head_output_convs(model: Any) -> list[str]:
    """Names of the convolutions whose outputs reach a graph output through no other conv: the
    class-logit convs, and through the DFL integral (a fixed conv after a Softmax) the box convs."""
    g = model.graph
    prod = _producers(g)
    stack, seen, found = [o.name for o in g.output], set(), []
    while stack:
        n = prod.get(stack.pop())
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        if n.op_type in QUANT_OPS:
            found.append(n.name)
            if not _after_softmax(n, prod):
                continue
            stack.append(n.input[0])
            continue
        stack.extend(n.input)
    return sorted(found)


def downstream(model: Any, names: Sequence[str]) -> list[str]:
    """Nodes fed by the outputs of ``names`` through no quantizable op (:data:`QUANT_OPS`): after the head's
    convs, its decoding (concat, DFL softmax, sigmoid), which must stay float too (boxes and scores share
    those tensors); after a conv kept float in the body, its activation only: the next conv is quantized."""
    keep = set(names)
    tensors = {o for n in model.graph.node if n.name in keep for o in n.output}
    out = []
    for n in model.graph.node:  # topological order: one pass suffices
        if n.name not in keep and n.op_type not in QUANT_OPS and tensors & set(n.input):
            tensors.update(n.output)
            out.append(n.name)
    return out


def qdq_coverage(model: Any) -> dict[str, list[str]]:
    """Which Conv/ConvTranspose nodes have Q/DQ on both activation and weight inputs."""
    prod = _producers(model.graph)

    def dq(name: str) -> bool:
        p = prod.get(name)
        return p is not None and p.op_type == "DequantizeLinear"

    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    quantized = [n.name for n in convs if dq(n.input[0]) and dq(n.input[1])]
    return {"quantized": quantized, "float": [n.name for n in convs if n.name not in set(quantized)]}


def resolve_keep_float(model: Any, keep_float: str | Sequence[str]) -> list[str]:
    """``auto`` (the head's output convs), ``none``, or node names (comma-separated) that must exist."""
    if isinstance(keep_float, str):
        if keep_float == "auto":
            return head_output_convs(model)
        if keep_float == "none":
            return []
        keep_float = [s.strip() for s in keep_float.split(",") if s.strip()]
    names = {n.name for n in model.graph.node}
    missing = [k for k in keep_float if k not in names]
    if missing:
        raise ConfigError(
            f"--keep-float: no node named {missing[0]!r} in the model; expected auto, none or node names"
        )
    return list(keep_float)


# ----------------------------------------------------------------------------- quantization
def quant_settings(target: str, method: str) -> dict[str, Any]:
    """quantize_static keyword arguments for a target: ``tensorrt`` (the recipe above) or ``cpu``
    (onnxruntime's CPU form: every op quantized, outputs too, so the CPU runs integer kernels)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    if method not in METHODS:
        raise ConfigError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ConfigError(f"--target {target}: expected one of {', '.join(TARGETS)}")
    common = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "weight_type": QuantType.QInt8,
        "calibrate_method": {
            "entropy": CalibrationMethod.Entropy,
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
        }[method],
    }
    if target == "cpu":
        return {**common, "activation_type": QuantType.QUInt8, "extra_options": {"QuantizeBias": True}}
    return {
        **common,
        "activation_type": QuantType.QInt8,
        "op_types_to_quantize": QUANT_OPS,
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": QUANT_OPS,
        },
    }


def output_error(fp32: Path, int8: Path, x: np.ndarray) -> dict[str, float]:
    """INT8 vs FP32 outputs on images ``x`` (n, ...) in the models' input form: relative L2 of boxes and of
    score logits (scores near 0 or 1 hide differences, their logits do not), and max |score difference|."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    name = sessions[0].get_inputs()[0].name
    y = [np.concatenate([s.run(None, {name: xi[None]})[0] for xi in x]) for s in sessions]  # 2 x (n, 4+nc, A)
    (b0, s0), (b1, s1) = [(v[:, :4].astype(np.float64), v[:, 4:].astype(np.float64)) for v in y]

    def logit(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))

    return {
        "images": int(len(x)),
        "boxes_rel_l2": rel(b0, b1),
        "logits_rel_l2": rel(logit(s0), logit(s1)),
        "scores_max_abs": float(np.abs(s0 - s1).max()),
    }


def _run_quantize_static(src: Path, dst: Path, reader: Any, settings: dict, keep: list[str], n: int) -> None:
    """quantize_static with chunked calibration (ranges merged every ``CHUNK``-divisor images)."""
    from onnxruntime.quantization import quantize_static

    stride = max(d for d in range(1, min(CHUNK, n) + 1) if n % d == 0)
    extra = {**settings.pop("extra_options"), "CalibStridedMinMax": stride}
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)  # its "consider pre-processing" notes are not ours
    try:
        quantize_static(str(src), str(dst), reader, nodes_to_exclude=keep, extra_options=extra, **settings)
    except DefectdetError:  # ours, from the reader (a calibration image): it names the file already
        raise
    except Exception as e:  # onnxruntime raises plain ValueError/RuntimeError/Fail
        raise ExportError(f"{src}: onnxruntime quantization failed ({e.__class__.__name__}: {e})") from None
    finally:
        root.setLevel(level)


SENSITIVITY_IMAGES = 16  # calibration images the sensitivity ranking runs on (one at a time)


def sensitive_convs(qdq: Path, x: np.ndarray, input_name: str) -> list[tuple[str, float]]:
    """The quantized convs of the Q/DQ model ``qdq`` ranked by the signal-to-quantization-noise ratio (dB)
    of their input activation on images ``x`` (n, ...), lowest (noisiest) first: the tensor before its
    QuantizeLinear against the one after its DequantizeLinear, summed over the images."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    m = onnx.load(str(qdq))
    prod = _producers(m.graph)
    pairs = {}  # conv -> (activation before Q, after DQ)
    for n in m.graph.node:
        dq = prod.get(n.input[0]) if n.op_type in QUANT_OPS else None
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            pairs[n.name] = (q.input[0], n.input[0])
    aug = qdq.with_name(qdq.stem + ".sensitivity.onnx")
    dbg.modify_model_output_intermediate_tensors(str(qdq), str(aug))
    signal, noise = dict.fromkeys(pairs, 0.0), dict.fromkeys(pairs, 0.0)
    try:
        for xi in x:
            acts = dbg.collect_activations(str(aug), iter([{input_name: xi[None]}]))
            for conv, (pre, post) in pairs.items():
                a, b = acts[pre][0].astype(np.float64), acts[post][0].astype(np.float64)
                signal[conv] += float(np.square(a).sum())
                noise[conv] += float(np.square(a - b).sum())
    finally:
        aug.unlink(missing_ok=True)
    eps = np.finfo(np.float64).tiny
    sqnr = {c: 10 * np.log10(max(signal[c], eps) / max(noise[c], eps)) for c in pairs}
    return sorted(((c, round(float(v), 2)) for c, v in sqnr.items()), key=lambda cv: cv[1])


def default_output(model: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` beside it."""
    return model.with_name(f"{model.stem}.int8.onnx")


def _base_card(model: Any, src: Path) -> ModelCard:
    """The FP32 model's card, or (no sidecar) one made from its ultralytics metadata_props."""
    side = sidecar_path(src)
    if side.is_file():
        return ModelCard.load(src)
    embedded = props(model)
    if "names" not in embedded:
        raise ConfigError(
            f"{src}: no {side.name} and no 'names' in the ONNX metadata; export with `defectdet export`"
        )
    stride = int(embedded.get("stride", 32))
    return ModelCard.from_graph(
        model,
        src,
        sha256_file(src),
        [stride // 4, stride // 2, stride],
        "fp32",
        opset_version(model),
        RunInfo.find(src),
    )


def _int8_card(base: ModelCard, src: Path, target: str, report: dict[str, Any]) -> ModelCard:
    """The INT8 card, derived from the FP32 one: precision, the FP32 source and the report."""
    return base.derive(
        precision="int8-qdq" if target == "tensorrt" else "int8-qdq-cpu",
        source_onnx={"path": str(src.resolve()), "sha256": sha256_file(src)},
        quantization=report,
    )


def _check_source(src: Path, model: Any) -> tuple[str, tuple[int, int]]:
    """The FP32 ONNX (float32/uint8 input) must be static and not quantized; returns (input, (H, W))."""
    if has_qdq(model):
        raise ConfigError(
            f"{src}: already has Q/DQ nodes; quantize the FP32 model that `defectdet export` wrote"
        )
    name, shape, _, _ = io_shapes(model)
    if len(shape) != 4 or not all(shape):
        raise ConfigError(f"{src}: input {name} has shape {shape}; expected a static (1, 3, H, W) export")
    hw = shape[1:3] if input_format(model)[1] == "NHWC" else shape[2:4]  # a uint8 NHWC export: (1, H, W, 3)
    return name, (int(hw[0]), int(hw[1]))


def quantize_onnx(
    model: str | os.PathLike,
    data: str | os.PathLike,
    calib_images: int = 500,
    method: str = "entropy",
    out: str | os.PathLike | None = None,
    keep_float: str | Sequence[str] = "auto",
    split: str = "train",
    defect_fraction: float = 0.5,
    seed: int = 0,
    target: str = "tensorrt",
    show_progress: bool = True,
    float_sensitive: int = 0,
) -> QuantResult:
    """Quantize an FP32 ONNX to INT8 Q/DQ calibrated on ``data``; writes the model and its sidecar
    (with the quantization report: kept-float nodes, Q/DQ coverage, INT8-vs-FP32 output error).
    ``float_sensitive`` N: also keep in float the N convs whose quantized input is noisiest on the
    calibration images (:func:`sensitive_convs`; a second quantization without them)."""
    src = Path(model)
    fp = load_onnx(src)
    input_name, imgsz = _check_source(src, fp)
    base = _base_card(fp, src)
    preprocess: Preprocess = load_metadata(src, props(fp)).preprocess  # what the runtime will do
    settings = quant_settings(target, method)
    keep = resolve_keep_float(fp, keep_float)
    kept = keep_float if keep_float in ("auto", "none") else "named"
    if isinstance(float_sensitive, bool) or not isinstance(float_sensitive, int) or float_sensitive < 0:
        raise ConfigError(f"--float-sensitive {float_sensitive!r}: expected a whole number >= 0")
    more = f" + the {float_sensitive} with the noisiest input" if float_sensitive else ""
    paths, n_bad = calibration_images(data, calib_images, split, defect_fraction, seed)  # headers checked
    dst = Path(out) if out else default_output(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"defectdet quantize: {src} -> {dst} ({target}, {method}); calibrating on {len(paths)} {split} "
        f"images ({n_bad} defective), float: {len(keep)} convs ({kept}){more}"
    )
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=dst.parent))
    try:
        staged = work / dst.name
        sensitive: list[tuple[str, float]] = []
        for attempt in range(2 if float_sensitive else 1):
            reader = make_reader(paths, imgsz, input_name, show_progress, preprocess)
            tail = downstream(fp, keep)
            try:
                _run_quantize_static(src, staged, reader, dict(settings), keep + tail, len(paths))
            finally:
                reader.bar.close()  # also when an image fails: the error line then starts a line of its own
            if float_sensitive and not attempt:
                step = max(1, len(paths) // SENSITIVITY_IMAGES)
                x = load_images(paths[::step][:SENSITIVITY_IMAGES], imgsz, preprocess)
                sensitive = sensitive_convs(staged, x, input_name)[:float_sensitive]
                keep = keep + [c for c, _ in sensitive]
        q = load_onnx(staged)
        cov = qdq_coverage(q)
        card = _int8_card(
            base,
            src,
            target,
            {
                "tool": "onnxruntime.quantization.quantize_static",
                "target": target,
                "method": method,
                "data": str(Path(data).resolve()),
                "split": split,
                "calib_images": len(paths),
                "calib_defective": n_bad,
                "seed": seed,
                "kept_float": keep,
                "float_sensitive": float_sensitive,
                "sensitive": [{"conv": c, "sqnr_db": v} for c, v in sensitive],
                "float_head_tail": len(tail),
                "quantized_convs": len(cov["quantized"]),
                "float_convs": cov["float"],
                "opset": opset_version(q) or None,
            },
        )
        embed_metadata(q, {"defectdet": card.embedded_entry()})
        save_onnx(q, staged)
        load_onnx(staged)  # onnx.checker on what is written
        error = output_error(src, staged, load_images(paths[:8], imgsz, preprocess))
        card = card.replace(quantization={**card.quantization, "output_error": error})
        os.replace(staged, dst)
        side = card.save(dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return QuantResult(dst, side, dict(card.quantization))


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    """Built from :data:`defectdet.settings.export.QUANTIZE` (each option declared there once)."""
    from ..settings.options import parser
    from .gate import GATE_EXITS

    return parser(
        QUANTIZE,
        "INT8 Q/DQ quantization (onnxruntime) calibrated on defect images, then the FP32-vs-INT8 accuracy "
        "gate on the CPU.",
        GATE_EXITS,
        before="--no-gate: 0 once the INT8 model is written.",
    )


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet quantize``: quantize, report, then gate (non-zero exit on refusal)."""
    a = _parser().parse_args(argv)
    if a.gate:
        from .gate import recalibration

        recalibration(a)  # conflicting gate options: one line before the quantization, not after it
    r = quantize_onnx(
        a.model,
        a.data,
        a.calib_images,
        a.method,
        a.out,
        a.keep_float,
        a.split,
        a.defect_fraction,
        a.seed,
        a.target,
        float_sensitive=a.float_sensitive,
    )
    q = r.report
    err = q["output_error"]
    print(
        f"defectdet quantize: {r.onnx}: {q['quantized_convs']} convs with Q/DQ, "
        f"{len(q['float_convs'])} in float: {', '.join(q['float_convs']) or '-'}"
    )
    print(
        f"  INT8 vs FP32 on {err['images']} calibration images: boxes rel. L2 {err['boxes_rel_l2']:.4f}, "
        f"score logits rel. L2 {err['logits_rel_l2']:.4f}, max |score diff| {err['scores_max_abs']:.4f}"
    )
    print(f"  report: {r.sidecar}")
    if not a.gate:
        print("  accuracy gate skipped (--no-gate): run `defectdet gate` before deploying this model")
        return 0
    from .gate import gate_from_args

    return gate_from_args(Path(a.model), r.onnx, a.data, a)
