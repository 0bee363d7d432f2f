"""Raw head output -> Detections: vectorised decode, per-class thresholds, class-aware NMS, rescale.

Matches ultralytics' ``non_max_suppression`` (best class per anchor, strict ``conf > threshold``,
at most ``max_nms`` candidates by confidence, class-aware greedy IoU NMS suppressing ``IoU > iou``,
``max_det``) and ``scale_boxes`` (remove padding, divide by the per-axis gain, clip to the frame).
One deliberate difference: boxes with x2 < x1 or y2 < y1 (a random or diverged NMS-free head emits
them; DFL heads cannot) are dropped at the end instead of being returned.
NMS is OpenCV's ``cv2.dnn.NMSBoxesBatched``; :func:`nms_numpy` is a vectorised alternative that also
offers intersection-over-smaller, used to merge tiles.
"""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from ..errors import BadValue
from .detections import Detections
from .preprocess import LetterboxParams

MAX_NMS = 30000  # ultralytics' cap on boxes entering NMS


def decode_xywh_cls(
    pred: np.ndarray, thresholds: np.ndarray, max_nms: int = MAX_NMS
) -> tuple[np.ndarray, ...]:
    """One image's (4+nc, A) head output -> candidates above their class threshold.

    Returns (xyxy (N, 4) float32 in input pixels, conf (N,) float32, cls (N,) int32), sorted by
    confidence when more than ``max_nms`` had to be cut.
    """
    nc = pred.shape[0] - 4
    scores = pred[4:]  # (nc, A)
    best = scores.max(axis=0)  # (A,)
    idx = np.flatnonzero(best > thresholds.min())  # (K,) cheap pre-filter at the lowest threshold
    cls = scores[:, idx].argmax(axis=0) if nc > 1 else np.zeros(idx.size, np.int64)  # (K,)
    conf = best[idx]  # (K,)
    keep = conf > thresholds[cls]  # (K,) the class's own threshold
    idx, cls, conf = idx[keep], cls[keep], conf[keep]
    if idx.size > max_nms:
        top = np.argsort(-conf, kind="stable")[:max_nms]
        idx, cls, conf = idx[top], cls[top], conf[top]
    xywh = pred[:4, idx].T  # (N, 4) cx, cy, w, h
    xyxy = np.empty_like(xywh)  # (N, 4)
    half = xywh[:, 2:] / 2
    xyxy[:, :2] = xywh[:, :2] - half
    xyxy[:, 2:] = xywh[:, :2] + half
    return xyxy.astype(np.float32, copy=False), conf.astype(np.float32, copy=False), cls.astype(np.int32)


def decode_end2end(pred: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """One image's (N, 6) NMS-free output (x1, y1, x2, y2, conf, cls) -> rows above their class threshold."""
    cls = pred[:, 5].astype(np.int32)  # (N,)
    cls_ok = (cls >= 0) & (cls < thresholds.size)
    conf = pred[:, 4]
    keep = cls_ok & (conf > thresholds[np.clip(cls, 0, thresholds.size - 1)])
    return pred[keep, :4].astype(np.float32), conf[keep].astype(np.float32), cls[keep]


def nms_cv2(xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, iou: float) -> np.ndarray:
    """Class-aware greedy NMS (OpenCV): indices kept, highest confidence first."""
    if xyxy.shape[0] == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).astype(np.float64)  # (N, 4)
    keep = cv2.dnn.NMSBoxesBatched(xywh, conf.astype(np.float32), cls.astype(np.int32), 0.0, float(iou))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def nms_numpy(
    xyxy: np.ndarray,
    conf: np.ndarray,
    cls: np.ndarray,
    thr: float,
    metric: str = "iou",
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Class-aware greedy NMS in numpy; indices kept, highest confidence first.

    ``metric`` 'iou' or 'ios' (intersection over the smaller box: the clipped copy of an object cut
    by a tile border lies inside the whole copy, IoS ~ 1 although IoU may be small). With
    ``groups`` (N,), only boxes of different groups suppress each other (tiles already NMS'd inside).
    """
    if metric not in ("iou", "ios"):
        raise BadValue(f"nms metric {metric!r}: expected 'iou' or 'ios'")
    order = np.argsort(-conf, kind="stable")  # (N,)
    boxes = xyxy[order].astype(np.float64)  # (N, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    rival = cls[order][:, None] == cls[order][None, :]  # (N, N) same class
    if groups is not None:
        rival &= groups[order][:, None] != groups[order][None, :]
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])  # (N, N, 2)
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])  # (N, N, 2)
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)  # (N, N)
    denom = (
        area[:, None] + area[None, :] - inter if metric == "iou" else np.minimum(area[:, None], area[None, :])
    )
    overlap = np.where(rival, inter / np.maximum(denom, 1e-9), 0.0)  # (N, N)
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if alive[i]:
            alive[i + 1 :] &= overlap[i, i + 1 :] <= thr
    return order[alive]


def scale_boxes(xyxy: np.ndarray, p: LetterboxParams) -> np.ndarray:
    """Input-pixel boxes -> frame pixels: remove padding, divide by the per-axis gain, clip (in place)."""
    xyxy -= np.array([p.left, p.top, p.left, p.top], np.float32)  # (N, 4)
    xyxy /= np.array([p.gain[0], p.gain[1], p.gain[0], p.gain[1]], np.float32)
    h, w = p.orig_shape
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    return xyxy


def postprocess(
    pred: np.ndarray,
    params: LetterboxParams,
    thresholds: np.ndarray,
    names: Mapping[int, str] | np.ndarray,
    iou: float = 0.7,
    max_det: int = 300,
    end2end: bool = False,
) -> Detections:
    """One image's raw output ((4+nc, A), or (N, 6) when ``end2end``) -> Detections in frame pixels.

    ``names``: ``{id: name}`` or a (nc,) str array indexed by class id (faster).
    """
    if end2end:
        xyxy, conf, cls = decode_end2end(pred, thresholds)
        keep = np.arange(conf.size)[:max_det]
    else:
        xyxy, conf, cls = decode_xywh_cls(pred, thresholds)
        keep = nms_cv2(xyxy, conf, cls, iou)[:max_det]
    xyxy = scale_boxes(np.ascontiguousarray(xyxy[keep]), params)  # (K, 4) frame pixels
    ok = (xyxy[:, 2] >= xyxy[:, 0]) & (
        xyxy[:, 3] >= xyxy[:, 1]
    )  # an inverted box (NMS-free heads can emit them) is no detection
    if not ok.all():
        xyxy, keep = xyxy[ok], keep[ok]
    # a float32 sigmoid can round to 1.0000001; scores are probabilities
    return Detections.from_arrays(xyxy, np.clip(conf[keep], 0.0, 1.0), cls[keep], names)
