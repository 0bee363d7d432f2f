"""Model metadata for the runtime: class names, input size, strides, pre-processing, thresholds.

Sources, later ones filling only what earlier ones lack:

1. the sidecar ``<model stem>.json`` next to the model (written by ``defectdet export``);
2. metadata embedded in the model: ONNX ``metadata_props`` as ultralytics writes them (strings,
   read with ``ast.literal_eval`` like ultralytics' AutoBackend) plus the ``defectdet`` JSON entry
   ``defectdet export`` adds, or the ultralytics ``.engine`` header (4-byte little-endian length +
   JSON before the TensorRT plan).

A model with neither ``names`` nor ``imgsz`` gets a :class:`MetadataError` naming what is missing
and where it looked. Per-class thresholds come from the sidecar's ``thresholds`` and/or a
thresholds YAML ``{thresholds: {class_name_or_id: conf}}``.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import load_json_object
from ..errors import DefectdetError

SIDECAR_SUFFIX = ".json"
LAYOUT_XYWH_CLS = "xywh+cls"  # (B, 4+nc, A): cx, cy, w, h in input pixels, then nc class scores (sigmoid)
LAYOUT_END2END = "xyxy+conf+cls"  # (B, N, 6): NMS-free heads (e.g. YOLO26), boxes in input pixels


class MetadataError(DefectdetError):
    """Model metadata is missing or malformed (the message names the file and the missing keys)."""


@dataclass(frozen=True)
class Preprocess:
    """How frames become the network input (the export records what training used)."""

    letterbox: bool = True  # True: keep aspect, pad centred (ultralytics LetterBox); False: stretch
    rgb: bool = True  # the network wants RGB; frames arrive BGR (OpenCV)
    scale: float = 1 / 255  # pixel multiplier (applied as a division by 255 when it is 1/255, as ultralytics does)
    pad_value: int = 114  # letterbox border grey level


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to know about a detector besides its weights."""

    names: dict[int, str]  # class id -> name
    imgsz: tuple[int, int]  # network input (H, W)
    strides: tuple[int, ...] = (8, 16, 32)  # detection-head strides (anchor count = sum(H*W / s^2))
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

    def anchors(self) -> int:
        """Anchor points the head emits at ``imgsz``: sum over strides of (H/s)*(W/s)."""
        h, w = self.imgsz
        return sum((h // s) * (w // s) for s in self.strides)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` / ``model.engine`` -> ``model.json`` beside it."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def read_engine_header(path: str | os.PathLike) -> tuple[int, dict[str, Any]]:
    """Return (byte offset of the TensorRT plan, header metadata) of an ``.engine`` file.

    ultralytics writes a 4-byte little-endian JSON length, the JSON, then the plan; a plain plan has
    no header and gives ``(0, {})``.
    """
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(4), byteorder="little")
        size = f.seek(0, 2)
        if 0 < n <= size - 4:
            f.seek(4)
            try:
                meta = json.loads(f.read(n))
            except (ValueError, UnicodeDecodeError):
                return 0, {}
            if isinstance(meta, dict):
                return 4 + n, meta
    return 0, {}


def _literal(value: Any) -> Any:
    """ultralytics stores dicts/lists as Python-literal strings in ONNX metadata_props."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _read_sidecar(path: Path) -> dict[str, Any]:
    """Parse the JSON sidecar; malformed JSON names file:line."""
    return load_json_object(path, "the export's model metadata (a JSON object)", MetadataError)


def _names(value: Any, where: str) -> dict[int, str]:
    """``{"0": "scratch"}`` / ``{0: 'scratch'}`` / ``["scratch", ...]`` -> ``{0: "scratch"}``."""
    value = _literal(value)
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, Mapping) or not value:
        raise MetadataError(f"{where}: 'names' must be a non-empty mapping of class id -> name, got {value!r:.80}")
    try:
        names = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise MetadataError(f"{where}: 'names' keys must be class ids (integers), got {list(value)[:5]}") from None
    if sorted(names) != list(range(len(names))):
        raise MetadataError(f"{where}: 'names' ids must be 0..{len(names) - 1}, got {sorted(names)[:10]}")
    return names


def _imgsz(value: Any, where: str) -> tuple[int, int]:
    """``640`` / ``[480, 640]`` / ``"[480, 640]"`` -> ``(H, W)``."""
    value = _literal(value)
    if isinstance(value, int):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise MetadataError(f"{where}: 'imgsz' must be [H, W] (positive integers), got {value!r}")
    return int(value[0]), int(value[1])


def _strides(merged: Mapping[str, Any], where: str) -> tuple[int, ...]:
    """Explicit ``strides`` list, else P3-P5 below ultralytics' max ``stride`` (8, 16, 32 for stride 32)."""
    if merged.get("strides") is not None:
        s = _literal(merged["strides"])
        if not isinstance(s, (list, tuple)) or not s or not all(isinstance(v, int) and v > 0 for v in s):
            raise MetadataError(f"{where}: 'strides' must be a list of positive integers, got {s!r}")
        return tuple(int(v) for v in s)
    top = int(_literal(merged.get("stride", 32)))
    return tuple(top // d for d in (4, 2, 1))


def _preprocess(value: Any, where: str) -> Preprocess:
    if value is None:
        return Preprocess()
    if not isinstance(value, Mapping):
        raise MetadataError(f"{where}: 'preprocess' must be a mapping, got {type(value).__name__}")
    unknown = set(value) - {"letterbox", "rgb", "scale", "pad_value"}
    if unknown:
        raise MetadataError(f"{where}: unknown 'preprocess' keys {sorted(unknown)}; expected letterbox, rgb, scale, pad_value")
    d = Preprocess()
    return Preprocess(
        letterbox=bool(value.get("letterbox", d.letterbox)),
        rgb=bool(value.get("rgb", d.rgb)),
        scale=float(_literal(value.get("scale", d.scale))),
        pad_value=int(value.get("pad_value", d.pad_value)),
    )


def _layout(merged: Mapping[str, Any]) -> str:
    """Sidecar ``output_layout`` text, else ultralytics' ``end2end`` / ``args.nms`` flags."""
    text = str(merged.get("output_layout") or "")
    if text:
        return LAYOUT_END2END if text.replace(" ", "").startswith(LAYOUT_END2END) else LAYOUT_XYWH_CLS
    args = _literal(merged.get("args")) or {}
    e2e = _literal(merged.get("end2end", False)) or (isinstance(args, Mapping) and args.get("nms"))
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
    sidecar = _read_sidecar(side) if side.is_file() else {}
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
            f"{side} ({'found' if sidecar else 'not found'}) and the {kind} ({'has no such key' if embedded else 'empty'}); "
            f"export with `defectdet export` or write {side.name} with "
            '{"names": {"0": "scratch", ...}, "imgsz": [H, W]}'
        )
    names = _names(merged["names"], where)
    meta = ModelMetadata(
        names=names,
        imgsz=_imgsz(merged["imgsz"], where),
        strides=_strides(merged, where),
        preprocess=_preprocess(merged.get("preprocess"), where),
        input_name=merged.get("input_name") or None,
        output_layout=_layout(merged),
        batch=int(_literal(merged.get("batch", 1)) or 1),
        cls_loss=merged.get("cls_loss"),
        thresholds=parse_thresholds(merged.get("thresholds") or {}, names, where),
        source=where,
    )
    return meta


def parse_thresholds(mapping: Mapping[Any, Any], names: Mapping[int, str], where: str) -> dict[int, float]:
    """``{class_name_or_id: conf}`` -> ``{class_id: conf}``; unknown classes and bad values name ``where``."""
    mapping = _literal(mapping)
    if not isinstance(mapping, Mapping):
        raise MetadataError(f"{where}: 'thresholds' must be a mapping of class name or id -> confidence")
    by_name = {v: k for k, v in names.items()}
    out: dict[int, float] = {}
    for key, value in mapping.items():
        if isinstance(key, str) and key in by_name:
            cid = by_name[key]
        elif isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
            cid = int(key)
        else:
            cid = -1
        if cid not in names:
            raise MetadataError(
                f"{where}: threshold for unknown class {key!r}; expected one of {list(names.values())} or ids 0..{len(names) - 1}"
            )
        try:
            conf = float(value)
        except (TypeError, ValueError):
            conf = float("nan")
        if not 0.0 <= conf <= 1.0:
            raise MetadataError(f"{where}: threshold for class {key!r} must be a number in [0, 1], got {value!r}")
        out[cid] = conf
    return out


def load_thresholds(source: str | os.PathLike | Mapping[Any, Any], names: Mapping[int, str]) -> dict[int, float]:
    """Per-class thresholds from a YAML file ``{thresholds: {name_or_id: conf}}`` or a mapping.

    A mapping may be the inner ``{name_or_id: conf}`` or the whole ``{thresholds: {...}}`` document.
    """
    if isinstance(source, Mapping):
        return parse_thresholds(source.get("thresholds", source), names, "thresholds")
    from ..config import load_yaml  # yaml only; no heavy imports

    path = Path(source)
    try:
        doc = load_yaml(path, kind="thresholds")
    except DefectdetError as e:
        raise MetadataError(str(e)) from None
    if "thresholds" not in doc:
        raise MetadataError(f"{path}: expected a top-level 'thresholds:' mapping of class name or id -> confidence")
    return parse_thresholds(doc["thresholds"] or {}, names, str(path))
