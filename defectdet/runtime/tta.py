"""Test-time views: flips (test-time augmentation) and tiles of a frame, detected in one batch, merged.

``tta`` chooses the flips: ``none`` (the frame alone), ``hflip`` (the frame and its left-right mirror:
2 passes), ``hvflip`` (the frame, its left-right and its top-bottom mirror: 3 passes). The model runs on
every view; a mirror's boxes are mirrored back (``x -> w - x``: exact in pixel edges), and the passes are
merged as ultralytics' own test-time augmentation does (``augment=True``: the passes' boxes pooled, then
one class-aware greedy IoU NMS at the detector's ``iou``): a defect seen in several passes keeps its
highest-scoring box, one seen in one pass only keeps its box and score. Weighted box fusion would average
the coordinates; greedy NMS keeps scores calibrated thresholds can still be applied to.

With tiles, every tile is flipped (tiles x flips views, one backend batch), each tile's passes are merged
as above, then the tiles as :func:`~defectdet.runtime.tiling.merge_tiles` does. numpy and OpenCV only.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..errors import BadValue
from .detections import Detections
from .postprocess import nms_numpy
from .tiling import check_grid, merge_tiles, tile_windows

TTA_MODES = ("none", "hflip", "hvflip")
# flip codes of each mode's passes: None the frame itself, "h" left-right, "v" top-bottom
_FLIPS = {"none": (None,), "hflip": (None, "h"), "hvflip": (None, "h", "v")}
TILES_HELP = "null (off), native (tiles of the model input's size) or ROWSxCOLS (e.g. 2x3)"

Predict = Callable[[Sequence[np.ndarray]], "list[Detections]"]
Window = tuple  # (x0, y0, x1, y1) in frame pixels


def check_tta(value: object, key: str = "tta") -> str:
    """``value`` as one of :data:`TTA_MODES` (``off``/``false``/None: none), else a one-line BadValue."""
    if value is None or value is False or value == "off":
        return "none"
    if value not in TTA_MODES:
        raise BadValue(f"{key}={value!r}: expected one of {', '.join(TTA_MODES)}")
    return str(value)


def parse_tiles(value: object, key: str = "tiles") -> str | tuple[int, int] | None:
    """A tiles setting -> None (off), ``"native"`` or (rows, cols); ``1x1`` is off (the frame itself).

    Accepts null / off / false, ``native``, ``"2x3"`` and ``[2, 3]``; anything else is a one-line BadValue.
    """
    if value is None or value is False or value in ("off", "none"):
        return None
    if value == "native":
        return "native"
    grid = value
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
        grid = [int(p) for p in parts if p.strip().isdigit()] if len(parts) == 2 else []
        grid = grid if len(grid) == 2 else None
    ok = isinstance(grid, (list, tuple)) and len(grid) == 2
    ok = ok and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in grid)
    if not ok:
        raise BadValue(f"{key}={value!r}: expected {TILES_HELP}, rows and cols integers >= 1")
    rows, cols = int(grid[0]), int(grid[1])
    return None if (rows, cols) == (1, 1) else (rows, cols)


def check_overlap(value: object, key: str = "tile_overlap") -> float:
    """A tile overlap: a fraction of the tile size in [0, 0.9]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 0.9
    if not ok:
        raise BadValue(f"{key}={value!r}: expected a fraction of the tile size in [0, 0.9]")
    return float(value)


def _native_spans(size: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """[start, end) spans of exactly ``tile`` pixels (the whole axis when it is no longer), evenly spread
    over [0, size) with neighbours sharing at least ``overlap * tile`` pixels."""
    if size <= tile:
        return [(0, size)]
    n = math.ceil((size - tile) / (tile * (1.0 - overlap)) - 1e-9) + 1
    starts = np.round(np.linspace(0, size - tile, n)).astype(int)
    return [(int(a), int(a) + tile) for a in starts]


def native_windows(shape_hw: Sequence[int], input_hw: Sequence[int], overlap: float) -> list[Window]:
    """Windows ``(x0, y0, x1, y1)`` of exactly the model input's size (an axis no longer than the input:
    whole), row-major: each is fed to the model unscaled, at the frame's own scale (what a model trained
    on native-scale windows learnt), with at least ``overlap`` of a tile shared by neighbours."""
    ys = _native_spans(int(shape_hw[0]), int(input_hw[0]), overlap)
    xs = _native_spans(int(shape_hw[1]), int(input_hw[1]), overlap)
    return [(x0, y0, x1, y1) for (y0, y1) in ys for (x0, x1) in xs]


def native_grid(shape_hw: Sequence[int], input_hw: Sequence[int], overlap: float) -> tuple[int, int]:
    """(rows, cols) of :func:`native_windows`."""
    ys = _native_spans(int(shape_hw[0]), int(input_hw[0]), overlap)
    return len(ys), len(native_windows(shape_hw, input_hw, overlap)) // len(ys)


def windows_for(
    shape_hw: Sequence[int], tiles: str | tuple[int, int] | None, overlap: float, input_hw: Sequence[int]
) -> list[Window]:
    """The windows a frame is detected in: the whole frame (tiles None), a fixed grid, or native windows."""
    h, w = int(shape_hw[0]), int(shape_hw[1])
    if tiles is None:
        return [(0, 0, w, h)]
    if tiles == "native":
        return native_windows((h, w), input_hw, overlap)
    return tile_windows((h, w), check_grid(tiles, overlap), overlap)


def flip_image(image: np.ndarray, code: str | None) -> np.ndarray:
    """The view of ``image`` for flip ``code`` (None: itself, "h": left-right, "v": top-bottom)."""
    if code is None:
        return image
    return np.ascontiguousarray(image[:, ::-1] if code == "h" else image[::-1])


def unflip(det: Detections, code: str | None, shape_hw: Sequence[int]) -> Detections:
    """Boxes found on the ``code`` view of an image of shape (h, w), in the image's own pixels."""
    if code is None or not len(det):
        return det
    xyxy = det.xyxy.copy()  # (N, 4)
    if code == "h":
        w = float(shape_hw[1])
        xyxy[:, [0, 2]] = w - det.xyxy[:, [2, 0]]
    else:
        h = float(shape_hw[0])
        xyxy[:, [1, 3]] = h - det.xyxy[:, [3, 1]]
    return Detections(xyxy, det.confidence, det.class_id, det.class_name)


def merge_flips(
    parts: Sequence[Detections],
    codes: Sequence[str | None],
    shape_hw: Sequence[int],
    iou: float,
    max_det: int = 300,
) -> Detections:
    """Each pass's boxes mirrored back, pooled, then class-aware greedy IoU NMS between passes (a pass's own
    boxes were NMS'd already); highest confidence first. One pass returns it unchanged."""
    if len(parts) != len(codes):
        raise ValueError(f"merge_flips: {len(parts)} detection sets for {len(codes)} flips")
    if len(parts) == 1:
        return parts[0][:max_det]
    back = [unflip(d, c, shape_hw) for d, c in zip(parts, codes)]
    pooled = Detections.concat(back)
    if not len(pooled):
        return Detections.empty()
    groups = np.concatenate([np.full(len(d), i) for i, d in enumerate(back)])  # (N,) pass of each box
    keep = nms_numpy(pooled.xyxy, pooled.confidence, pooled.class_id, iou, metric="iou", groups=groups)
    return pooled[keep[:max_det]]


def detect_views(
    frame: np.ndarray,
    predict: Predict,
    tta: str = "none",
    tiles: str | tuple[int, int] | None = None,
    overlap: float = 0.2,
    input_hw: Sequence[int] = (640, 640),
    iou: float = 0.7,
    max_det: int = 300,
) -> Detections:
    """Detections of one frame over its views: every window (tile) x every flip of ``tta``, predicted in one
    call ``predict(list of images) -> list[Detections]`` (each in its image's pixels), merged per window
    (:func:`merge_flips`) and then between windows (:func:`~defectdet.runtime.tiling.merge_tiles`)."""
    codes = _FLIPS[check_tta(tta)]
    windows = windows_for(frame.shape[:2], tiles, overlap, input_hw)
    crops = [frame[y0:y1, x0:x1] for (x0, y0, x1, y1) in windows]  # views, no copy
    parts = predict([flip_image(c, code) for c in crops for code in codes])
    if len(parts) != len(crops) * len(codes):
        raise ValueError(f"detect_views: {len(parts)} results for {len(crops) * len(codes)} views")
    k = len(codes)
    per_window = [
        merge_flips(parts[i * k : (i + 1) * k], codes, crop.shape[:2], iou, max_det)
        for i, crop in enumerate(crops)
    ]
    if len(windows) == 1 and windows[0] == (0, 0, frame.shape[1], frame.shape[0]):
        return per_window[0]
    return merge_tiles(per_window, windows, iou, max_det)


def passes(tta: str, tiles: str | tuple[int, int] | None, grid: tuple[int, int] | None = None) -> int:
    """Model passes per frame: flips x tiles (``grid``: the native grid a frame got)."""
    rows, cols = grid or (tiles if isinstance(tiles, tuple) else (1, 1))
    return len(_FLIPS[check_tta(tta)]) * rows * cols
