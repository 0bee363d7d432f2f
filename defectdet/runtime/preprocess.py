"""Frame -> network input, exactly as ultralytics' predictor does it, with OpenCV and numpy only.

ultralytics (``LetterBox`` + ``BasePredictor.preprocess``): scale ``r = min(H/h, W/w)``, resized size
``(max(round(w*r), 1), max(round(h*r), 1))`` with ``cv2.INTER_LINEAR``, centred padding
``top = round(dh/2 - 0.1)``, ``bottom = round(dh/2 + 0.1)`` (same for left/right) in grey 114,
then BGR -> RGB, HWC -> CHW, ``float32 / 255``. The division (not a multiply by 1/255) makes the
input bit-identical to ultralytics'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..artifact import Preprocess


@dataclass(frozen=True)
class LetterboxParams:
    """How one frame was mapped into the network input; inverted by ``postprocess.scale_boxes``."""

    orig_shape: tuple[int, int]  # frame (h, w)
    new_unpad: tuple[int, int]  # resized frame (w, h), before padding (cv2 order)
    top: int
    bottom: int
    left: int
    right: int
    gain: tuple[float, float]  # (gain_x, gain_y) = resized / original, per axis


def letterbox_params(orig_hw: tuple[int, int], new_hw: tuple[int, int], letterbox: bool = True) -> LetterboxParams:
    """ultralytics' ``LetterBox.get_params`` (auto=False, scaleup=True, center=True) or a plain stretch."""
    h0, w0 = int(orig_hw[0]), int(orig_hw[1])
    H, W = int(new_hw[0]), int(new_hw[1])
    if not letterbox:  # scale_fill: stretch to the input size, no padding
        return LetterboxParams((h0, w0), (W, H), 0, 0, 0, 0, (W / w0, H / h0))
    r = min(H / h0, W / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = (W - new_w) / 2, (H - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return LetterboxParams((h0, w0), (new_w, new_h), top, bottom, left, right, (new_w / w0, new_h / h0))


def letterbox(
    frame: np.ndarray, new_hw: tuple[int, int], pad_value: int = 114, letterbox: bool = True
) -> tuple[np.ndarray, LetterboxParams]:
    """Resize + pad a (h, w, 3) uint8 frame to (H, W, 3); returns the image and its parameters."""
    p = letterbox_params(frame.shape[:2], new_hw, letterbox)
    img = frame
    if (frame.shape[1], frame.shape[0]) != p.new_unpad:
        img = cv2.resize(frame, p.new_unpad, interpolation=cv2.INTER_LINEAR)  # (new_h, new_w, 3)
    if p.top or p.bottom or p.left or p.right:
        img = cv2.copyMakeBorder(img, p.top, p.bottom, p.left, p.right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return img, p  # (H, W, 3) uint8


def to_chw(img: np.ndarray, out: np.ndarray, rgb: bool = True, scale: float = 1 / 255) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> ``out`` (3, H, W) float32, channel order and scale as the model wants.

    One contiguous plane at a time (``cv2.split``): 1.4x faster than one strided HWC -> CHW pass, same values.
    """
    planes = cv2.split(img)  # 3 x (H, W) uint8, B, G, R
    if rgb:
        planes = planes[::-1]
    inv = 1.0 / scale
    exact = abs(inv - round(inv)) < 1e-6  # 1/255 -> divide by 255.0 exactly like torch's .div_(255)
    for plane, dst in zip(planes, out):  # dst: (H, W) float32 view
        if exact:
            np.divide(plane, np.float32(round(inv)), out=dst, casting="unsafe")
        else:
            np.multiply(plane, np.float32(scale), out=dst, casting="unsafe")
    return out


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Validate a frame; grey (h, w) or (h, w, 1) becomes BGR, BGRA drops alpha. Raises ValueError otherwise."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame: expected a numpy array (h, w, 3) uint8 BGR, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame: expected dtype uint8 (OpenCV BGR image), got {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame: expected shape (h, w, 3) BGR, got {frame.shape}")
    return frame


class Preprocessor:
    """Letterbox + normalise frames into one reused (B, 3, H, W) float32 buffer.

    The buffers are overwritten by the next call: a Detector is meant for one thread. The letterboxed
    image is drawn into a reused canvas too: while frames keep their size, the padding is drawn once
    and each frame is only resized into the middle (no per-frame image allocation).
    """

    def __init__(self, imgsz: tuple[int, int], settings: Preprocess | None = None):
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.settings = settings or Preprocess()
        self._buf = np.empty((1, 3, *self.imgsz), np.float32)  # (B, 3, H, W)
        self._canvas = np.empty((*self.imgsz, 3), np.uint8)  # (H, W, 3) letterboxed BGR
        self._canvas_params: LetterboxParams | None = None  # the layout the canvas's padding was drawn for

    def letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, LetterboxParams]:
        """:func:`letterbox` into the reused canvas (the same pixels); returns a view valid until the next call."""
        s = self.settings
        p = letterbox_params(frame.shape[:2], self.imgsz, s.letterbox)
        if p != self._canvas_params:
            self._canvas[...] = s.pad_value
            self._canvas_params = p
        inner = self._canvas[p.top : p.top + p.new_unpad[1], p.left : p.left + p.new_unpad[0]]  # (new_h, new_w, 3) view
        if (frame.shape[1], frame.shape[0]) != p.new_unpad:
            cv2.resize(frame, p.new_unpad, dst=inner, interpolation=cv2.INTER_LINEAR)
        else:
            inner[...] = frame
        return self._canvas, p

    def __call__(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxParams]]:
        """BGR frames -> (batch (B, 3, H, W) float32, one LetterboxParams per frame)."""
        n = len(frames)
        if self._buf.shape[0] < n:
            self._buf = np.empty((n, 3, *self.imgsz), np.float32)
        s = self.settings
        params = []
        for i, frame in enumerate(frames):
            img, p = self.letterbox(as_bgr(frame))  # (H, W, 3) uint8
            to_chw(img, self._buf[i], s.rgb, s.scale)
            params.append(p)
        return self._buf[:n], params  # (n, 3, H, W)
