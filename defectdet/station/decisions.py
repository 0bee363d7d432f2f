"""OK/NG per frame: per-class thresholds, an optional region of interest, optional k-of-n debounce.

A detection is a *defect* when its confidence is strictly above its class's threshold (the same
``>`` rule as the Detector) and its box centre lies inside the region of interest. A frame is
NG when it has a defect — or, with debounce ``k`` of ``n``, when at least ``k`` of the last ``n``
frames (this one included) had one. ``rising`` marks the first NG frame after an OK one: a new
defective part, where a reject actuator should fire once.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import cv2
import numpy as np

from ..artifact import Thresholds
from ..errors import ConfigError
from ..runtime.detections import Detections

ThresholdSource = Union[None, str, os.PathLike, Mapping[Any, float], np.ndarray, Thresholds]


@dataclass(frozen=True)
class Decision:
    """The verdict on one frame."""

    ng: bool  # the frame's verdict (after debounce)
    raw_ng: bool  # this frame alone has a defect
    rising: bool  # ng now and not on the previous frame
    defects: Detections  # the detections that count: above their class threshold, inside the ROI

    @property
    def label(self) -> str:
        return "NG" if self.ng else "OK"


def parse_roi(roi: Optional[Sequence], units: str = "fraction") -> Optional[np.ndarray]:
    """``[x1, y1, x2, y2]`` or a polygon ``[[x, y], ...]`` -> (K, 2) float32 vertices, or None.

    ``units``: 'fraction' (of the frame width/height, so one ROI fits any resolution) or 'pixels'.
    """
    if roi is None:
        return None
    if units not in ("fraction", "pixels"):
        raise ConfigError(f"roi_units={units!r}: expected 'fraction' or 'pixels'")
    try:
        pts = np.asarray(roi, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"roi={roi!r}: expected [x1, y1, x2, y2] or a polygon [[x, y], ...]") from None
    if pts.shape == (4,):
        x1, y1, x2, y2 = pts
        if x2 <= x1 or y2 <= y1:
            raise ConfigError(f"roi={list(map(float, pts))}: expected x2 > x1 and y2 > y1")
        pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)  # (4, 2)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
        raise ConfigError(f"roi={roi!r}: expected [x1, y1, x2, y2] or a polygon of at least 3 [x, y] points")
    if units == "fraction" and (pts.min() < 0 or pts.max() > 1):
        raise ConfigError(f"roi={roi!r}: fractions must lie in [0, 1] (or set roi_units: pixels)")
    return pts


class Decider:
    """Turns Detections into a :class:`Decision`, frame after frame (stateful when debouncing)."""

    def __init__(
        self,
        names: Mapping[int, str],
        conf: float = 0.25,
        thresholds: ThresholdSource = None,
        roi: Optional[Sequence] = None,
        roi_units: str = "fraction",
        debounce_k: int = 1,
        debounce_n: int = 1,
    ):
        """Args:
        names: class id -> name (the model's).
        conf: threshold of classes without their own.
        thresholds: per-class thresholds: a :class:`~defectdet.artifact.Thresholds` (e.g.
            ``Detector.operating``), a thresholds YAML path (``defectdet val --target-escape``), a
            ``{name_or_id: conf}`` mapping, or an (nc,) vector (e.g. ``Detector.thresholds``).
        roi: region of interest (see :func:`parse_roi`); None: the whole frame.
        roi_units: 'fraction' or 'pixels'.
        debounce_k, debounce_n: NG when k of the last n frames have a defect (1, 1: no debounce).
        """
        self.names = dict(names)
        if not 0.0 <= float(conf) <= 1.0:
            raise ConfigError(f"conf={conf}: expected a confidence in [0, 1]")
        self.thresholds = self._vector(float(conf), thresholds)  # (nc,)
        self.roi = parse_roi(roi, roi_units)
        self.roi_units = roi_units
        k, n = int(debounce_k), int(debounce_n)
        if not 1 <= k <= n:
            raise ConfigError(f"debounce {k} of {n}: expected 1 <= k <= n")
        self.k, self.n = k, n
        self._history: collections.deque[bool] = collections.deque(maxlen=n)
        self._prev_ng = False
        self._roi_cache: tuple[tuple[int, int], np.ndarray] | None = None

    def _vector(self, conf: float, thresholds: ThresholdSource) -> np.ndarray:
        nc = len(self.names)
        if isinstance(thresholds, np.ndarray):
            vec = np.asarray(thresholds, np.float32).reshape(-1)
            if vec.shape != (nc,):
                raise ConfigError(f"thresholds: expected {nc} values (one per class), got {vec.shape[0]}")
            return vec
        return Thresholds.load(thresholds, self.names).vector(conf)  # (nc,)

    def roi_pixels(self, shape: tuple[int, ...]) -> np.ndarray:
        """The ROI polygon in pixels of a frame of ``shape`` (H, W[, C]), (K, 1, 2) float32."""
        h, w = int(shape[0]), int(shape[1])
        if self._roi_cache is None or self._roi_cache[0] != (h, w):
            scale = np.array([w, h], np.float32) if self.roi_units == "fraction" else np.ones(2, np.float32)
            self._roi_cache = ((h, w), (self.roi * scale).reshape(-1, 1, 2))  # (K, 1, 2) for OpenCV
        return self._roi_cache[1]

    def defects(self, dets: Detections, frame_shape: tuple[int, ...]) -> Detections:
        """The detections that count: above their class's threshold and centred inside the ROI."""
        if not len(dets):
            return dets
        cls = dets.class_id
        thr = np.where(
            cls < len(self.thresholds), self.thresholds[np.minimum(cls, len(self.thresholds) - 1)], 1.0
        )  # (N,)
        keep = dets.confidence > thr  # (N,)
        if self.roi is not None and keep.any():
            poly = self.roi_pixels(frame_shape)
            centres = (dets.xyxy[:, :2] + dets.xyxy[:, 2:]) / 2  # (N, 2)
            inside = np.array(
                [cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for x, y in centres], bool
            )
            keep &= inside
        return dets[keep]

    def __call__(self, dets: Detections, frame_shape: tuple[int, ...]) -> Decision:
        """Decide one frame (``frame_shape``: the frame's (H, W[, C]), for a fractional ROI)."""
        defects = self.defects(dets, frame_shape)
        raw = len(defects) > 0
        self._history.append(raw)
        ng = sum(self._history) >= self.k
        rising = ng and not self._prev_ng
        self._prev_ng = ng
        return Decision(ng=ng, raw_ng=raw, rising=rising, defects=defects)
