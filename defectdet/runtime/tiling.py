"""Tiling for large frames with small defects: split into overlapping tiles, detect each, merge.

A (rows, cols) grid with fractional ``overlap`` covers the frame exactly: tiles have equal size
``tile = size / (n - (n - 1) * overlap)`` and neighbours share ``overlap * tile`` pixels, so any
defect smaller than the overlap lies whole inside at least one tile. Tile detections are shifted
to frame pixels and merged by class-aware greedy NMS between tiles with intersection-over-smaller:
the clipped copy of a defect cut by a tile border lies inside the whole copy, so IoS ~ 1 removes it
where IoU would not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import BadValue
from .detections import Detections
from .postprocess import nms_numpy


def check_grid(tiles: Sequence[int], overlap: float) -> tuple[int, int]:
    """Validate ``tiles=(rows, cols)`` and ``overlap`` in [0, 1); returns (rows, cols)."""
    if len(tiles) != 2 or not all(isinstance(t, (int, np.integer)) and t >= 1 for t in tiles):
        raise BadValue(f"tiles={tuple(tiles)!r}: expected (rows, cols), two integers >= 1")
    if not 0.0 <= overlap < 1.0:
        raise BadValue(f"overlap={overlap}: expected a fraction of the tile size in [0, 1)")
    return int(tiles[0]), int(tiles[1])


def _spans(size: int, n: int, overlap: float) -> list[tuple[int, int]]:
    """n overlapping [start, end) spans of equal length covering [0, size)."""
    if n == 1:
        return [(0, size)]
    length = size / (n - (n - 1) * overlap)
    step = length * (1 - overlap)
    spans = []
    for i in range(n):
        start = int(round(i * step))
        end = size if i == n - 1 else min(size, int(round(i * step + length)))
        spans.append((start, max(end, start + 1)))
    return spans


def tile_windows(
    shape_hw: tuple[int, int], tiles: Sequence[int], overlap: float = 0.2
) -> list[tuple[int, int, int, int]]:
    """Windows ``(x0, y0, x1, y1)`` of a (rows, cols) grid over a frame of shape (h, w), row-major."""
    rows, cols = check_grid(tiles, overlap)
    h, w = int(shape_hw[0]), int(shape_hw[1])
    return [
        (x0, y0, x1, y1) for (y0, y1) in _spans(h, rows, overlap) for (x0, x1) in _spans(w, cols, overlap)
    ]


def merge_tiles(
    parts: Sequence[Detections], windows: Sequence[tuple[int, int, int, int]], thr: float, max_det: int = 300
) -> Detections:
    """Shift each tile's detections by its window origin, then class-aware IoS-NMS between tiles.

    Boxes of the same tile never suppress each other here (the tile's own NMS already ran), so a
    single tile returns exactly the untiled result.
    """
    if len(parts) != len(windows):
        raise ValueError(f"merge_tiles: {len(parts)} detection sets for {len(windows)} windows")
    shifted, tile_of = [], []
    for t, (det, (x0, y0, _, _)) in enumerate(zip(parts, windows)):
        if len(det):
            xyxy = det.xyxy + np.array([x0, y0, x0, y0], np.float32)  # (n, 4) frame pixels
            shifted.append(Detections(xyxy, det.confidence, det.class_id, det.class_name))
            tile_of.append(np.full(len(det), t))
    if not shifted:
        return Detections.empty()
    allx = Detections.concat(shifted)
    keep = nms_numpy(
        allx.xyxy, allx.confidence, allx.class_id, thr, metric="ios", groups=np.concatenate(tile_of)
    )
    return allx[keep[:max_det]]
