"""The artefact's constants and files: the sidecar JSON beside a model, the engine header, hashes.

A model ``model.onnx`` / ``model.engine`` travels with ``model.json`` (its *sidecar*): class names,
input size, strides, pre-processing, output layout, thresholds, provenance. ``defectdet export``
writes it; quantize, gate, build-engine and ``defectdet val --write-sidecar`` update it; the
runtime reads it. Torch-free: stdlib only.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..config import atomic_write_text, load_json_object
from ..errors import ConfigError

SIDECAR_SUFFIX = ".json"
LAYOUT_XYWH_CLS = "xywh+cls"  # (B, 4+nc, A): cx, cy, w, h in input pixels, then nc class scores (sigmoid)
LAYOUT_END2END = "xyxy+conf+cls"  # (B, N, 6): NMS-free heads (e.g. YOLO26), boxes in input pixels
OUTPUT_LAYOUT = "xywh+cls (1, 4+nc, A)"  # what `defectdet export` records: A anchors
DEFAULT_STRIDES = (8, 16, 32)  # P3-P5 of a stride-32 ultralytics detection head
TRT86_MAX_OPSET = 17  # TensorRT 8.6 (JetPack 6.0), like 8.5 (JetPack 5.1.x), parses ONNX opset <= 17
MIN_OPSET = 11  # the oldest opset `defectdet export` accepts
INPUT_DTYPES = ("float32", "uint8")  # what the graph's image input takes (float16 graphs keep float32 I/O)
INPUT_LAYOUTS = ("NCHW", "NHWC")  # (B, 3, H, W) planes, or (B, H, W, 3): OpenCV's interleaved image


class MetadataError(ConfigError):
    """The model artefact (metadata, sidecar, thresholds) is missing or malformed; the message names
    the file and the key and says what was expected."""


@dataclass(frozen=True)
class Preprocess:
    """How frames become the network input (the export records what training used).

    ``dtype`` float32: the host converts the letterboxed image (channel order, ``scale``, HWC -> CHW).
    ``dtype`` uint8: the host feeds the letterboxed bytes as they are, in ``layout``; the graph
    applies ``scale`` (and the layout change) itself. ``rgb`` is always the channel order the
    input tensor wants.
    """

    letterbox: bool = True  # True: keep aspect, pad centred (ultralytics LetterBox); False: stretch
    rgb: bool = True  # the input wants RGB; frames arrive BGR (OpenCV)
    scale: float = (
        1 / 255
    )  # pixel multiplier (applied as a division by 255 when it is 1/255, as ultralytics does)
    pad_value: int = 114  # letterbox border grey level
    dtype: str = "float32"  # the input tensor's type: float32 | uint8 (INPUT_DTYPES)
    layout: str = "NCHW"  # the input tensor's layout: NCHW (B, 3, H, W) | NHWC (B, H, W, 3) (INPUT_LAYOUTS)


PREPROCESS = asdict(Preprocess())  # what ultralytics trains with, as the sidecar records it


def literal(value: Any) -> Any:
    """ultralytics stores dicts/lists as Python-literal strings in ONNX metadata_props."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def parse_names(value: Any, where: str) -> dict[int, str]:
    """``{"0": "scratch"}`` / ``{0: 'scratch'}`` / ``["scratch", ...]`` -> ``{0: "scratch"}``."""
    value = literal(value)
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, Mapping) or not value:
        raise MetadataError(
            f"{where}: 'names' must be a non-empty mapping of class id -> name, got {value!r:.80}"
        )
    try:
        names = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise MetadataError(
            f"{where}: 'names' keys must be class ids (integers), got {list(value)[:5]}"
        ) from None
    if sorted(names) != list(range(len(names))):
        raise MetadataError(f"{where}: 'names' ids must be 0..{len(names) - 1}, got {sorted(names)[:10]}")
    return names


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` / ``model.engine`` -> ``model.json``; ``model.int8.onnx`` -> ``model.int8.json``."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a sidecar JSON; malformed JSON names file:line (a :class:`MetadataError`)."""
    return load_json_object(path, "the model metadata object `defectdet export` writes", MetadataError)


def write_sidecar(path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write a sidecar atomically (temp file + rename)."""
    return atomic_write_text(path, json.dumps(meta, indent=1, default=str) + "\n")


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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_id(path: str | os.PathLike) -> str:
    """``model.onnx:1a2b3c4d5e6f``: the model file's name and the start of its SHA-256 (what events,
    summaries and the line's outputs name the model by)."""
    return f"{Path(path).name}:{sha256_file(path)[:12]}"
