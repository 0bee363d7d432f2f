"""An implicit-INT8 calibration cache bound to the model it was calibrated for.

TensorRT's builder asks the calibrator for its cache *before* asking for batches
(``IInt8Calibrator.read_calibration_cache``): a cache that is there is replayed, whatever model it
came from, and the images are never read. After retraining, ``build-engine --int8 --calib-data``
would then build the new model with the old model's activation scales, silently.

So a cache ``model.calib.cache`` travels with a record ``model.calib.cache.json``: the ONNX's
SHA-256, the pre-processing the calibration images went through, the calibration input shape and
the TensorRT version, plus the cache's own SHA-256. :func:`replay_cache` compares it with this
build: the same model -> replay; anything else (or no record) -> recalibrate when ``--calib-data`` is
given, else a one-line refusal. The engine's sidecar records which cache (and hash) it was built
with.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..artifact import load_metadata, sha256_file
from ..config import atomic_write_text
from . import ExportError

IDENTITY_KEYS = ("onnx_sha256", "preprocess", "input_shape", "tensorrt")


def record_path(cache: Path) -> Path:
    """``model.calib.cache`` -> ``model.calib.cache.json``."""
    return Path(cache).with_name(Path(cache).name + ".json")


def cache_identity(onnx: Path, input_shape: Sequence[int], trt_version: str) -> dict[str, Any]:
    """What a calibration cache depends on: the model's bytes, its pre-processing, the calibration
    input shape and the TensorRT version that wrote it."""
    meta = load_metadata(onnx, {})
    return {
        "onnx_sha256": sha256_file(onnx),
        "preprocess": asdict(meta.preprocess),
        "input_shape": [int(d) for d in input_shape],
        "tensorrt": str(trt_version),
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _mismatch(record: dict[str, Any] | None, identity: dict[str, Any], rec: Path) -> str | None:
    """None when ``record`` is this build's identity, else what differs, in words."""
    if record is None:
        return f"has no readable record of the model it was calibrated for ({rec.name})"
    diffs = [k for k in IDENTITY_KEYS if record.get(k) != identity[k]]
    if not diffs:
        return None
    words = {
        "onnx_sha256": f"another model (sha256 {str(record.get('onnx_sha256'))[:12]}, this one "
        f"{identity['onnx_sha256'][:12]})",
        "preprocess": "another pre-processing",
        "input_shape": f"input shape {record.get('input_shape')} (this build {identity['input_shape']})",
        "tensorrt": f"TensorRT {record.get('tensorrt')} (this is {identity['tensorrt']})",
    }
    return "was calibrated for " + ", ".join(words[k] for k in diffs)


def replay_cache(cache: Path, identity: dict[str, Any], have_data: bool) -> bool:
    """True: replay ``cache`` (it belongs to this model); False: calibrate from ``--calib-data`` (no
    cache yet, or one from another model, which is then overwritten). Raises :class:`ExportError`
    for a foreign cache without ``--calib-data``."""
    cache = Path(cache)
    if not cache.is_file():
        return False
    rec = record_path(cache)
    why = _mismatch(_read_record(rec), identity, rec)
    if why is None:
        return True
    if have_data:
        print(
            f"defectdet build-engine: note: the calibration cache {cache} {why}: recalibrating on "
            "--calib-data"
        )
        return False
    raise ExportError(
        f"{cache}: this INT8 calibration cache {why}; replaying it would build with another "
        "model's scales: pass --calib-data to recalibrate (it overwrites the cache), or remove it"
    )


def write_record(cache: Path, identity: dict[str, Any]) -> Path:
    """Write the record beside a freshly written ``cache``."""
    doc = {
        **identity,
        "cache_sha256": sha256_file(cache),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic_write_text(record_path(cache), json.dumps(doc, indent=1) + "\n")


def engine_entry(cache: Path, replayed: bool) -> dict[str, Any]:
    """The engine sidecar's ``calibration_cache`` section."""
    return {"path": str(Path(cache).resolve()), "sha256": sha256_file(cache), "replayed": replayed}
