"""``defectdet export``: a trained checkpoint -> ``model.onnx`` the runtime and TensorRT read.

The graph comes from ultralytics' own ONNX exporter (offline, static shape, batch 1, onnxslim),
at opset 17 by default: the newest TensorRT 8.5 and 8.6 (JetPack 5.1.x, 6.0) parse. On top of what ultralytics
embeds in ``metadata_props`` (``names``, ``imgsz``, ``stride``, ``task``, ``batch``, ...) this adds
``strides`` and a ``defectdet`` JSON entry (training loss, checkpoint hash, preprocessing), and
writes the same facts to the sidecar ``model.json`` (the contract :mod:`defectdet.artifact` owns).

Parity: the ONNX output is compared with the PyTorch model's on one seeded input, boxes (input
pixels) and class scores (sigmoid) separately, and the maximum absolute differences are printed
and stored in the sidecar. ``--half`` writes an FP16-typed graph (FP32 inputs/outputs) with
onnxruntime's float16 converter, the form TensorRT 11's strongly typed builder turns into FP16.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import (
    INPUT_DTYPES,
    MIN_OPSET,
    TRT86_MAX_OPSET,
    ModelCard,
    RunInfo,
    embed_metadata,
    load_onnx,
    save_onnx,
    sha256_file,
)
from ..errors import ConfigError
from . import ExportError
from .uint8 import uint8_input

# Parity limits, in output units: boxes are input pixels (an FP32 re-association error is ~1e-3 px at 640),
# scores are probabilities. FP16 carries ~3 significant digits, so its limits are those of half precision.
PARITY_TOL = {"fp32": {"boxes": 0.05, "scores": 1e-3}, "fp16": {"boxes": 2.0, "scores": 0.02}}


@dataclass
class ExportResult:
    """What ``export_onnx`` wrote and measured."""

    onnx: Path
    sidecar: Path
    card: ModelCard
    parity: dict[str, Any] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        """The sidecar as written."""
        return self.card.to_dict()


# ----------------------------------------------------------------------------- export steps
def _load_checkpoint(checkpoint: Path, shown: Path | None = None):
    """An ultralytics YOLO object from a .pt checkpoint, offline; errors name ``shown`` (the user's
    path when ``checkpoint`` is a working copy)."""
    from ..offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics import YOLO

    try:
        return YOLO(str(checkpoint), task="detect")
    except Exception as e:  # unpickling errors come in many types
        shown = shown or checkpoint
        why = " ".join(
            f"{e.__class__.__name__}: {e}".replace(str(checkpoint), str(shown)).split()
        )  # one line
        raise ExportError(f"{shown}: cannot load checkpoint ({why}); expected an ultralytics .pt") from None


def _ultralytics_export(checkpoint: Path, workdir: Path, imgsz: Any, opset: int, simplify: bool) -> Path:
    """Run ultralytics' ONNX exporter on a copy of the checkpoint inside ``workdir`` (its output
    lands beside the .pt, and a user's own ``best.onnx`` must not be overwritten)."""
    copy = workdir / checkpoint.name
    shutil.copyfile(checkpoint, copy)
    yolo = _load_checkpoint(copy, shown=checkpoint)
    kwargs = {
        "format": "onnx",
        "opset": opset,
        "simplify": simplify,
        "dynamic": False,
        "batch": 1,
        "device": "cpu",
        "nms": False,
        "verbose": False,
    }
    if imgsz is not None:
        kwargs["imgsz"] = imgsz
    try:
        return Path(yolo.export(**kwargs))
    except Exception as e:
        raise ExportError(
            f"{checkpoint}: ultralytics ONNX export failed ({e.__class__.__name__}: {e})"
        ) from None


def toposort(graph: Any) -> None:
    """Reorder ``graph.node`` topologically, in place (TensorRT's parser reads nodes in file order;
    the float16 converter appends its input Casts at the end)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise ExportError(
                f"graph has a cycle or dangling inputs at node {pending[0].name or pending[0].op_type}"
            )
        for n in ready:
            produced.update(n.output)
        ordered += ready
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def to_fp16(model: Any) -> Any:
    """FP16-typed graph, FP32 inputs/outputs (onnxruntime's converter, as ultralytics' CPU export uses)."""
    from onnxruntime.transformers import float16

    model = float16.convert_float_to_float16(model, keep_io_types=True)
    toposort(model.graph)
    return model


def _parity_input(shape: list[int], dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(what the ONNX takes, the (1, 3, H, W) float32 RGB PyTorch equivalent) from one seeded draw."""
    rng = np.random.default_rng(seed)
    if dtype != "tensor(uint8)":
        x = rng.random(shape, dtype=np.float32)  # (1, 3, H, W) in [0, 1)
        return x, x
    u = rng.integers(0, 256, shape, dtype=np.uint8)  # (1, H, W, 3) or (1, 3, H, W) BGR bytes
    chw = u.transpose(0, 3, 1, 2) if shape[3] == 3 and shape[1] != 3 else u  # (1, 3, H, W) BGR
    return u, np.ascontiguousarray(chw[:, ::-1]).astype(np.float32) / np.float32(255)  # RGB in [0, 1]


def parity(torch_model: Any, onnx_path: Path, precision: str = "fp32", seed: int = 0) -> dict[str, Any]:
    """Max |ONNX - PyTorch| on one seeded uniform input, for boxes (pixels) and scores separately
    (a uint8-input graph gets random bytes, PyTorch the same image normalised as ultralytics does)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    feed, x = _parity_input(list(inp.shape), inp.type, seed)
    y_onnx = sess.run(None, {inp.name: feed})[0]  # (1, 4+nc, A)
    model = torch_model.float().eval()
    with torch.no_grad():
        y_pt = model(torch.from_numpy(x))
    y_pt = (y_pt[0] if isinstance(y_pt, (list, tuple)) else y_pt).numpy()  # (1, 4+nc, A)
    if y_pt.shape != y_onnx.shape:
        raise ExportError(f"{onnx_path}: output shape {y_onnx.shape} differs from PyTorch's {y_pt.shape}")
    diff = np.abs(y_onnx.astype(np.float64) - y_pt)  # (1, 4+nc, A)
    tol = PARITY_TOL[precision]
    out = {
        "boxes_max_abs": float(diff[:, :4].max()),
        "scores_max_abs": float(diff[:, 4:].max()),
        "tolerance": tol,
        "seed": seed,
    }
    out["ok"] = out["boxes_max_abs"] <= tol["boxes"] and out["scores_max_abs"] <= tol["scores"]
    return out


def default_output(checkpoint: Path, half: bool) -> Path:
    """``model.onnx`` (``model.fp16.onnx`` with --half) next to the checkpoint."""
    return checkpoint.parent / ("model.fp16.onnx" if half else "model.onnx")


def _check_args(checkpoint: Path, opset: int) -> None:
    if not checkpoint.is_file():
        raise ConfigError(
            f"{checkpoint}: checkpoint not found; expected a .pt from `defectdet train` (weights/best.pt)"
        )
    if checkpoint.suffix != ".pt":
        raise ConfigError(
            f"{checkpoint}: expected an ultralytics .pt checkpoint, got a "
            f"{checkpoint.suffix or 'extensionless'} file"
        )
    import onnx

    top = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= top:
        raise ConfigError(
            f"--opset {opset}: expected {MIN_OPSET}..{top} (TensorRT 8.5/8.6 parse <= {TRT86_MAX_OPSET})"
        )
    if opset > TRT86_MAX_OPSET:
        print(
            f"defectdet export: warning: opset {opset} > {TRT86_MAX_OPSET}: TensorRT 8.5/8.6 (JetPack "
            "5.1.x/6.0) cannot parse it"
        )


def export_onnx(
    checkpoint: str | os.PathLike,
    imgsz: int | list[int] | None = None,
    opset: int = TRT86_MAX_OPSET,
    half: bool = False,
    out: str | os.PathLike | None = None,
    simplify: bool = True,
    check_parity: bool = True,
    input_dtype: str = "float32",
    input_layout: str = "NHWC",
) -> ExportResult:
    """Export ``checkpoint`` to a static ONNX with metadata and a sidecar; returns paths and parity.

    ``imgsz`` None uses the run's native size for a ``crop=native`` model (``RunInfo.deploy_imgsz``), else
    the training size stored in the checkpoint. ``input_dtype`` uint8 gives the graph a uint8 BGR
    input in ``input_layout`` (NHWC or NCHW) with the normalisation inside (:mod:`.uint8`). Raises
    :class:`ExportError` when the graph fails ``onnx.checker`` or parity exceeds :data:`PARITY_TOL`.
    """
    import onnx

    ckpt = Path(checkpoint)
    _check_args(ckpt, opset)
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(f"--input {input_dtype}: expected one of {', '.join(INPUT_DTYPES)}")
    run = RunInfo.find(ckpt)
    if imgsz is None and run is not None and (imgsz := run.deploy_imgsz):
        print(
            f"defectdet export: imgsz {imgsz}, the native size this crop=native model was validated at "
            "(--imgsz to choose another)"
        )
    dst = Path(out) if out else default_output(ckpt, half)
    dst.parent.mkdir(parents=True, exist_ok=True)
    precision = "fp16" if half else "fp32"
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=dst.parent))
    try:
        raw = _ultralytics_export(ckpt, work, imgsz, opset, simplify)
        model = load_onnx(raw)
        torch_model = _load_checkpoint(ckpt).model
        strides = [int(s) for s in torch_model.stride.tolist()]
        if half:
            model = to_fp16(model)
        preprocess = uint8_input(model, input_layout) if input_dtype == "uint8" else None
        card = ModelCard.from_graph(
            model, ckpt, sha256_file(ckpt), strides, precision, opset, run, preprocess
        )
        embed_metadata(model, {"strides": str(list(card.strides)), "defectdet": card.embedded_entry()})
        onnx.checker.check_model(model)
        staged = save_onnx(model, work / dst.name)
        result = parity(torch_model, staged, precision) if check_parity else {}
        if result and not result["ok"]:
            raise ExportError(
                f"{dst}: ONNX differs from PyTorch beyond tolerance (boxes {result['boxes_max_abs']:.3g} px, "
                f"scores {result['scores_max_abs']:.3g}; limits {result['tolerance']})"
            )
        card = card.replace(parity=result)
        os.replace(staged, dst)
        side = card.save(dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(dst, side, card, result)


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    """Built from :data:`defectdet.settings.export.EXPORT` (each option declared there once)."""
    from ..settings.export import EXPORT
    from ..settings.options import parser

    return parser(
        EXPORT,
        "Export a checkpoint to a static ONNX (onnxslim, metadata, sidecar JSON) and check parity with "
        "PyTorch.",
        [
            (0, "model.onnx and its sidecar written"),
            (
                2,
                "the export failed (e.g. ONNX differs from PyTorch beyond tolerance), or a bad option or "
                "file",
            ),
        ],
    )


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet export``."""
    a = _parser().parse_args(argv)
    if a.imgsz is not None and len(a.imgsz) > 2:
        raise ConfigError(f"--imgsz {' '.join(map(str, a.imgsz))}: expected N or H W")
    imgsz = None if a.imgsz is None else (a.imgsz[0] if len(a.imgsz) == 1 else list(a.imgsz))
    r = export_onnx(
        a.model,
        imgsz=imgsz,
        opset=a.opset,
        half=a.half,
        out=a.out,
        simplify=a.simplify,
        check_parity=a.parity,
        input_dtype=a.input_dtype,
        input_layout=a.input_layout.upper(),
    )
    m = r.metadata
    print(
        f"defectdet export: {r.onnx} ({m['precision']}, opset {m['opset']}, input {m['input_shape']} "
        f"{m['preprocess']['dtype']}, "
        f"output {m['output_shape']}, cls_loss={m['cls_loss']})"
    )
    if r.parity:
        print(
            f"  parity vs PyTorch: max abs diff boxes {r.parity['boxes_max_abs']:.3g} px, "
            f"scores {r.parity['scores_max_abs']:.3g} (limits {r.parity['tolerance']})"
        )
    print(f"  metadata: {r.sidecar}")
    return 0
