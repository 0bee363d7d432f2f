"""Native-resolution training windows and quarter turns (numpy only).

A 640 px board downscaled to a 320 px training size halves every defect; a 320 px window cut at
native scale keeps them whole. ``crop=native`` trains on such windows: a share of them centred on
a defect (the box entirely inside), the rest anywhere in the image. Boxes are clipped to the
window exactly; a box of which less than ``min_visible`` of the area is left is dropped (a sliver
at the border is not a recognisable defect), and so is its label.

``rot90=P`` turns a training image by a random quarter turn (90, 180 or 270 degrees) with
probability P. With ultralytics' own left-right and up-down flips it gives all eight orientations
of a square, for parts whose defects look the same whichever way round the part lies (boards,
webs, sheet surfaces); leave it 0 where orientation carries meaning.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

CROP_MODES = ("off", "native")
DEFAULT_CENTRED_SHARE = 0.5
DEFAULT_MIN_VISIBLE = 0.3


def choose_window(
    hw: tuple[int, int],
    boxes: np.ndarray,
    size: int,
    rng: np.random.Generator,
    centred_share: float = DEFAULT_CENTRED_SHARE,
) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)`` of a ``size`` x ``size`` window inside an image of ``hw`` = (H, W) (the whole
    side where the image is smaller). ``boxes`` (K, 4) xyxy pixels; with probability
    ``centred_share`` the window holds one of them (picked at random) entirely, where it fits."""
    H, W = int(hw[0]), int(hw[1])
    w, h = min(size, W), min(size, H)
    lo_x, hi_x, lo_y, hi_y = 0, W - w, 0, H - h
    if len(boxes) and rng.random() < centred_share:
        x1, y1, x2, y2 = np.asarray(boxes, dtype=float)[rng.integers(len(boxes))]
        # window positions that contain the box: x0 <= x1 and x0 + w >= x2 (centred if it cannot)
        lx, hx = int(np.ceil(x2 - w)), int(np.floor(x1))
        ly, hy = int(np.ceil(y2 - h)), int(np.floor(y1))
        if lx > hx:
            lx = hx = int(round((x1 + x2 - w) / 2))
        if ly > hy:
            ly = hy = int(round((y1 + y2 - h) / 2))
        lo_x, hi_x = min(max(lx, 0), W - w), max(min(hx, W - w), 0)
        lo_y, hi_y = min(max(ly, 0), H - h), max(min(hy, H - h), 0)
    x0 = int(rng.integers(lo_x, max(hi_x, lo_x) + 1))
    y0 = int(rng.integers(lo_y, max(hi_y, lo_y) + 1))
    return x0, y0, w, h


def crop_boxes(
    boxes: np.ndarray, window: tuple[int, int, int, int], min_visible: float = DEFAULT_MIN_VISIBLE
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4) xyxy in image pixels -> (boxes in window pixels (M, 4), kept indices (M,))."""
    x0, y0, w, h = window
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    clipped = np.stack(
        [
            np.clip(b[:, 0] - x0, 0, w),
            np.clip(b[:, 1] - y0, 0, h),
            np.clip(b[:, 2] - x0, 0, w),
            np.clip(b[:, 3] - y0, 0, h),
        ],
        1,
    )  # (K, 4)
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)  # (K,)
    left = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    keep = np.flatnonzero((left > 0) & (left >= min_visible * np.maximum(area, 1e-12)))
    return clipped[keep], keep


def native_window(
    img: np.ndarray,
    boxes: np.ndarray,
    size: int,
    rng: np.random.Generator,
    centred_share: float = DEFAULT_CENTRED_SHARE,
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Cut one training window: (window image, its boxes (M, 4) xyxy, kept indices, window)."""
    win = choose_window(img.shape[:2], boxes, size, rng, centred_share)
    x0, y0, w, h = win
    out, keep = crop_boxes(boxes, win, min_visible)
    return np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w]), out, keep, win


def native_size(shapes: np.ndarray, stride: int = 32, imgsz: Optional[int] = None) -> int:
    """The evaluation/export size of a model trained on native windows: the training images'
    largest side (shapes (N, 2)), rounded up to the stride (never below ``imgsz``)."""
    side = int(np.max(shapes)) if len(shapes) else int(imgsz or stride)
    side = -(-side // stride) * stride
    return max(side, int(imgsz or 0))


def rotate90(img: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn ``img`` (H, W, C) by ``k`` quarter turns counter-clockwise (``np.rot90``) and its boxes
    (K, 4) xyxy pixels with it: one turn maps pixel (x, y) to (y, W - 1 - x), so a box's edges
    [x1, x2) x [y1, y2) go to [y1, y2) x [W - x2, W - x1)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for _ in range(int(k) % 4):
        w = img.shape[1]
        img = np.rot90(img)
        b = np.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], 1)  # (K, 4)
    return np.ascontiguousarray(img), b
