"""Read a model's metadata: class names, input size, strides, pre-processing, layout, thresholds.

Sources, later ones filling only what earlier ones lack:

1. the sidecar ``<model stem>.json`` next to the model (written by ``defectdet export``);
2. metadata embedded in the model: ONNX ``metadata_props`` as ultralytics writes them (strings,
   read with ``ast.literal_eval`` like ultralytics' AutoBackend) plus the ``defectdet`` JSON entry
   ``defectdet export`` adds, or the ultralytics ``.engine`` header (4-byte little-endian length +
   JSON before the TensorRT plan).

A model with neither ``names`` nor ``imgsz`` gets a :class:`MetadataError` naming what is missing
and where it looked. Per-class thresholds in the sidecar follow :mod:`defectdet.artifact.thresholds`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .sidecar import (
    DEFAULT_STRIDES,
    INPUT_DTYPES,
    INPUT_LAYOUTS,
    LAYOUT_END2END,
    LAYOUT_XYWH_CLS,
    MetadataError,
    Preprocess,
    literal,
    parse_names,
    read_engine_header,
    read_sidecar,
    sidecar_path,
)
from .thresholds import Thresholds


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to know about a detector besides its weights."""

    names: dict[int, str]  # class id -> name
    imgsz: tuple[int, int]  # network input (H, W)
    strides: tuple[int, ...] = DEFAULT_STRIDES  # detection-head strides (anchor count = sum(H*W / s^2))
    preprocess: Preprocess = field(default_factory=Preprocess)
    input_name: str | None = None  # None: the backend's first input
    output_layout: str = LAYOUT_XYWH_CLS
    batch: int = 1  # export batch size (static graphs)
    cls_loss: str | None = None  # informative: which classification loss trained the model
    thresholds: dict[int, float] = field(default_factory=dict)  # per-class confidence thresholds
    source: str = ""  # where this was read from, for messages

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    @property
    def end2end(self) -> bool:
        """True for NMS-free heads whose output is already (B, N, 6) detections."""
        return self.output_layout == LAYOUT_END2END

    def input_shape(self, batch: int | None = None) -> tuple[int, ...]:
        """The image input's shape in its recorded layout: (B, 3, H, W) or (B, H, W, 3)."""
        b = self.batch if batch is None else batch
        h, w = self.imgsz
        return (b, h, w, 3) if self.preprocess.layout == "NHWC" else (b, 3, h, w)

    def anchors(self) -> int:
        """Anchor points the head emits at ``imgsz``: sum over strides of (H/s)*(W/s)."""
        h, w = self.imgsz
        return sum((h // s) * (w // s) for s in self.strides)


def _imgsz(value: Any, where: str) -> tuple[int, int]:
    """``640`` / ``[480, 640]`` / ``"[480, 640]"`` -> ``(H, W)``."""
    value = literal(value)
    if isinstance(value, int):
        value = (value, value)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise MetadataError(f"{where}: 'imgsz' must be [H, W] (positive integers), got {value!r}")
    return int(value[0]), int(value[1])


def _strides(merged: Mapping[str, Any], where: str) -> tuple[int, ...]:
    """Explicit ``strides`` list, else P3-P5 below ultralytics' max ``stride`` (8, 16, 32 for stride 32)."""
    if merged.get("strides") is not None:
        s = literal(merged["strides"])
        if not isinstance(s, (list, tuple)) or not s or not all(isinstance(v, int) and v > 0 for v in s):
            raise MetadataError(f"{where}: 'strides' must be a list of positive integers, got {s!r}")
        return tuple(int(v) for v in s)
    top = int(literal(merged.get("stride", 32)))
    return tuple(top // d for d in (4, 2, 1))


def _preprocess(value: Any, where: str) -> Preprocess:
    if value is None:
        return Preprocess()
    if not isinstance(value, Mapping):
        raise MetadataError(f"{where}: 'preprocess' must be a mapping, got {type(value).__name__}")
    keys = [f.name for f in fields(Preprocess)]
    unknown = set(value) - set(keys)
    if unknown:
        raise MetadataError(
            f"{where}: unknown 'preprocess' keys {sorted(unknown)}; expected {', '.join(keys)}"
        )
    d = Preprocess()  # a sidecar written before dtype/layout existed: float32 NCHW
    dtype, layout = str(value.get("dtype", d.dtype)), str(value.get("layout", d.layout))
    if dtype not in INPUT_DTYPES:
        raise MetadataError(f"{where}: 'preprocess.dtype' must be one of {list(INPUT_DTYPES)}, got {dtype!r}")
    if layout not in INPUT_LAYOUTS:
        raise MetadataError(
            f"{where}: 'preprocess.layout' must be one of {list(INPUT_LAYOUTS)}, got {layout!r}"
        )
    return Preprocess(
        letterbox=bool(value.get("letterbox", d.letterbox)),
        rgb=bool(value.get("rgb", d.rgb)),
        scale=float(literal(value.get("scale", d.scale))),
        pad_value=int(value.get("pad_value", d.pad_value)),
        dtype=dtype,
        layout=layout,
    )


def _layout(merged: Mapping[str, Any]) -> str:
    """Sidecar ``output_layout`` text, else ultralytics' ``end2end`` / ``args.nms`` flags."""
    text = str(merged.get("output_layout") or "")
    if text:
        return LAYOUT_END2END if text.replace(" ", "").startswith(LAYOUT_END2END) else LAYOUT_XYWH_CLS
    args = literal(merged.get("args")) or {}
    e2e = literal(merged.get("end2end", False)) or (isinstance(args, Mapping) and args.get("nms"))
    return LAYOUT_END2END if e2e in (True, "True", "true") else LAYOUT_XYWH_CLS


def _with_defectdet_entry(embedded: dict[str, Any]) -> dict[str, Any]:
    """Unpack the ``defectdet`` JSON entry ``defectdet export`` adds to metadata_props (preprocess,
    strides, output_layout, cls_loss, ...) over ultralytics' own keys."""
    entry = embedded.pop("defectdet", None)
    if isinstance(entry, str):
        try:
            entry = json.loads(entry)
        except ValueError:
            entry = None
    if isinstance(entry, Mapping):
        embedded.update({k: v for k, v in entry.items() if v is not None})
    return embedded


def load_metadata(model_path: str | os.PathLike, embedded: Mapping[str, Any] | None = None) -> ModelMetadata:
    """Read the sidecar and the embedded metadata of ``model_path`` into a :class:`ModelMetadata`.

    Args:
        model_path: the ``.onnx`` / ``.engine`` file.
        embedded: metadata the backend read from the model (ONNX ``metadata_props``); for an
            ``.engine`` the ultralytics header is read here when this is None.
    """
    model_path = Path(model_path)
    side = sidecar_path(model_path)
    sidecar = read_sidecar(side) if side.is_file() else {}
    if embedded is None and model_path.suffix.lower() in (".engine", ".plan") and model_path.is_file():
        embedded = read_engine_header(model_path)[1]
    embedded = _with_defectdet_entry(dict(embedded or {}))
    merged = {**embedded, **{k: v for k, v in sidecar.items() if v is not None}}
    where = str(side if sidecar else model_path)
    missing = [k for k in ("names", "imgsz") if merged.get(k) in (None, "", {}, [])]
    if missing:
        kind = "ONNX metadata_props" if model_path.suffix.lower() == ".onnx" else "engine header"
        raise MetadataError(
            f"{model_path}: model metadata is missing {' and '.join(repr(k) for k in missing)}; looked in "
            f"{side} ({'found' if sidecar else 'not found'}) and the {kind} "
            f"({'has no such key' if embedded else 'empty'}); export with `defectdet export` or write "
            f"{side.name} with "
            '{"names": {"0": "scratch", ...}, "imgsz": [H, W]}'
        )
    names = parse_names(merged["names"], where)
    meta = ModelMetadata(
        names=names,
        imgsz=_imgsz(merged["imgsz"], where),
        strides=_strides(merged, where),
        preprocess=_preprocess(merged.get("preprocess"), where),
        input_name=merged.get("input_name") or None,
        output_layout=_layout(merged),
        batch=int(literal(merged.get("batch", 1)) or 1),
        cls_loss=merged.get("cls_loss"),
        thresholds=Thresholds.parse(merged.get("thresholds") or {}, names, where).given,
        source=where,
    )
    return meta
