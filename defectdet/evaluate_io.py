"""What ``defectdet val`` reads besides the split: an image's YOLO labels as arrays, and the model through
ultralytics (:mod:`defectdet.evaluate` and :mod:`defectdet.evaluate_views` both use them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .data.formats import read_labels
from .errors import DataError


def read_label_arrays(path: Path, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO label file -> (cls (M,), xyxyn (M, 4)); no file means a clean part. Invalid rows are an
    error here (a skipped defect would turn into a false overkill or a hidden escape)."""
    rows, bad = read_labels(path)
    wrong = [r[0] for r in rows if r[0] >= nc]
    if bad or wrong:
        what = f"{bad} invalid row(s)" if bad else f"class {wrong[0]} outside 0..{nc - 1}"
        raise DataError(
            f"{path}: {what}; expected 'class cx cy w h' rows (run defectdet data check for details)"
        )
    b = np.asarray([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4)  # (M, 4) cx cy w h
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)  # (M, 4)
    return np.asarray([r[0] for r in rows], dtype=np.int64), xyxy


def load_model(model: Any):
    """A ``YOLO`` object from a path (.pt / .onnx) or an already loaded one."""
    if hasattr(model, "predict"):
        return model
    from .offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics import YOLO

    return YOLO(str(model), task="detect")
