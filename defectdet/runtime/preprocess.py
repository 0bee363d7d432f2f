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


def letterbox_params(
    orig_hw: tuple[int, int], new_hw: tuple[int, int], letterbox: bool = True
) -> LetterboxParams:
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
        img = cv2.copyMakeBorder(
            img, p.top, p.bottom, p.left, p.right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3
        )
    return img, p  # (H, W, 3) uint8


def to_chw(img: np.ndarray, out: np.ndarray, rgb: bool = True, scale: float = 1 / 255) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> ``out`` (3, H, W) float32, channel order and scale as the model wants.

    One contiguous plane at a time (``cv2.split``): the same values as one strided HWC -> CHW pass,
    faster (contiguous reads and writes).
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
    """Validate a frame; grey (h, w) or (h, w, 1) becomes BGR, BGRA drops alpha; else ValueError."""
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
    """Letterbox + normalise frames into one reused input buffer, in the form the model records.

    float32 models get (B, 3, H, W) float32 (channel order and scale applied here). uint8 models
    (``preprocess.dtype: uint8``, the normalisation is in the graph) get the letterboxed bytes:
    NHWC (B, H, W, 3) BGR is letterboxed straight into the input buffer, NCHW planes are copied out
    of the canvas. The buffers are overwritten by the next call: a Detector is meant for one thread.
    The letterboxed image is drawn into a reused canvas: while frames keep their size, the padding
    is drawn once and each frame is only resized into the middle (no per-frame image allocation).
    """

    def __init__(self, imgsz: tuple[int, int], settings: Preprocess | None = None):
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.settings = settings or Preprocess()
        s = self.settings
        self.uint8 = s.dtype == "uint8"
        self._direct = self.uint8 and s.layout == "NHWC" and not s.rgb  # the canvas is the input itself
        self._buf = self._alloc(1)
        self._canvas = np.empty((*self.imgsz, 3), np.uint8)  # (H, W, 3) letterboxed BGR
        self._drawn: dict[
            int, LetterboxParams
        ] = {}  # canvas (-1, or an input slot) -> the layout its padding was drawn for

    def input_shape(self, n: int = 1) -> tuple[int, int, int, int]:
        """The batch this makes for ``n`` frames: (n, 3, H, W), or (n, H, W, 3) for an NHWC uint8 model."""
        h, w = self.imgsz
        return (n, h, w, 3) if self.uint8 and self.settings.layout == "NHWC" else (n, 3, h, w)

    def _alloc(self, n: int) -> np.ndarray:
        self._drawn = {
            k: v for k, v in getattr(self, "_drawn", {}).items() if k < 0
        }  # new slots: padding undrawn
        return np.empty(self.input_shape(n), np.uint8 if self.uint8 else np.float32)

    def letterbox(self, frame: np.ndarray, slot: int = -1) -> tuple[np.ndarray, LetterboxParams]:
        """:func:`letterbox` into the reused canvas (``slot`` -1) or straight into input slot ``slot``
        of an NHWC uint8 BGR buffer, the same pixels; returns it (valid until the next call) and the
        parameters."""
        s = self.settings
        canvas = self._canvas if slot < 0 else self._buf[slot]  # (H, W, 3) uint8
        p = letterbox_params(frame.shape[:2], self.imgsz, s.letterbox)
        if self._drawn.get(slot) != p:
            canvas[...] = s.pad_value
            self._drawn[slot] = p
        inner = canvas[
            p.top : p.top + p.new_unpad[1], p.left : p.left + p.new_unpad[0]
        ]  # (new_h, new_w, 3) view
        if (frame.shape[1], frame.shape[0]) != p.new_unpad:
            cv2.resize(frame, p.new_unpad, dst=inner, interpolation=cv2.INTER_LINEAR)
        else:
            inner[...] = frame
        return canvas, p

    def _fill(self, img: np.ndarray, dst: np.ndarray) -> None:
        """The letterboxed BGR canvas (H, W, 3) -> one slot of a uint8 input buffer."""
        if self.settings.layout == "NHWC":  # (H, W, 3): only the channel order can differ
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=dst)
            return
        order = (2, 1, 0) if self.settings.rgb else (0, 1, 2)
        for c, plane in zip(order, dst):  # plane: (H, W) uint8 view
            np.copyto(plane, img[..., c])

    def __call__(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxParams]]:
        """BGR frames -> (batch in the model's input form, one LetterboxParams per frame)."""
        n = len(frames)
        if self._buf.shape[0] < n:
            self._buf = self._alloc(n)
        s = self.settings
        params = []
        for i, frame in enumerate(frames):
            if self._direct:
                _, p = self.letterbox(as_bgr(frame), i)  # (H, W, 3) uint8, in place
            else:
                img, p = self.letterbox(as_bgr(frame))  # (H, W, 3) uint8
                if self.uint8:
                    self._fill(img, self._buf[i])
                else:
                    to_chw(img, self._buf[i], s.rgb, s.scale)
            params.append(p)
        return self._buf[:n], params  # (n, 3, H, W) float32 or (n, H, W, 3) / (n, 3, H, W) uint8
