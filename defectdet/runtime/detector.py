"""``Detector``: BGR frames in, :class:`Detections` out, on ONNX Runtime or TensorRT — no torch.

>>> with Detector("model.onnx", conf=0.25, thresholds="thresholds.yaml") as det:
...     dets = det(frame_bgr)            # Detections in frame pixels
...     batch = det.infer_batch(frames)  # list[Detections]
...     for dets in det.stream(video_frames):  # next frame letterboxed while the model runs
...         ...
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..artifact import MetadataError, ModelMetadata, Thresholds, load_metadata
from ..settings.inspect import INSPECT
from .backends import BackendError, create_backend
from .detections import Detections
from .postprocess import postprocess
from .preprocess import Preprocessor, as_bgr
from .tta import check_overlap, check_tta, detect_views, parse_tiles


@dataclass
class Timings:
    """Milliseconds spent in the last call (whole batch / all tiles)."""

    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0

    @property
    def total(self) -> float:
        return self.pre + self.infer + self.post


def _float32(pred: np.ndarray) -> np.ndarray:
    """A model output as float32 (FP16 engines return float16), without a copy when it already is."""
    return pred if pred.dtype == np.float32 else pred.astype(np.float32)


class Detector:
    """A defect detector on an exported model (``.onnx`` or TensorRT ``.engine``).

    Not thread-safe (buffers are reused between calls): use one Detector per thread.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        backend: str = "auto",
        conf: float = 0.25,
        iou: float = 0.7,
        thresholds: str | os.PathLike | Mapping[Any, float] | Thresholds | None = None,
        max_det: int = 300,
        tiles: str | tuple[int, int] | None = None,
        overlap: float = 0.2,
        tta: str = "none",
        **backend_options: Any,
    ):
        """Load the model and its metadata.

        Args:
            model_path: ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT), with its ``.json`` sidecar
                or embedded ultralytics metadata.
            backend: 'auto' (by suffix), 'onnxruntime' or 'tensorrt'.
            conf: confidence threshold for classes without their own threshold (strict ``>``).
            iou: class-aware NMS IoU threshold (boxes with IoU > iou are suppressed).
                A value out of its range (here and for ``conf``, ``max_det``, ``tiles``, ``overlap``)
                raises :class:`~defectdet.errors.BadValue`, a one-line ConfigError.
            thresholds: per-class thresholds: a YAML path ``{thresholds: {name_or_id: conf}}``, a
                mapping or a :class:`~defectdet.artifact.Thresholds`; they override the sidecar's
                ``thresholds``, which override ``conf``. The result is ``operating`` (a complete
                Thresholds, what the station's Decider and page read) and ``thresholds`` its vector.
            max_det: most detections kept per frame.
            tiles: (rows, cols) or ``"2x3"`` to detect on overlapping tiles of each frame (large frames,
                small defects); ``"native"``: tiles of exactly the model input's size, so each is
                seen at the frame's own scale; None or ``1x1``: off.
            overlap: tile overlap as a fraction of the tile size, in [0, 0.9].
            tta: test-time flips (:mod:`defectdet.runtime.tta`): ``none``, ``hflip`` (2 passes) or
                ``hvflip`` (3 passes), merged by class-aware NMS at ``iou``; with tiles, each tile is flipped.
            **backend_options: onnxruntime: ``threads``, ``providers``; tensorrt: ``device``, ``dla_core``.
        """
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: model file not found")
        # the ranges `defectdet inspect` declares for these keys (defectdet/settings/inspect.py)
        self.iou, self.max_det, self.conf = (
            INSPECT[k].check(v) for k, v in (("iou", iou), ("max_det", max_det), ("conf", conf))
        )
        self.overlap = check_overlap(overlap, "overlap")
        self.tiles = parse_tiles(tiles)  # None | "native" | (rows, cols)
        self.tta = check_tta(tta)
        self.backend = create_backend(self.model_path, backend, **backend_options)
        try:
            self.metadata: ModelMetadata = load_metadata(self.model_path, self.backend.embedded_metadata())
            self._check_io()
            names = self.metadata.names
            given = Thresholds.load(thresholds, names).over(Thresholds.of(names, self.metadata.thresholds))
            self.operating: Thresholds = given.filled(self.conf)  # what the Decider and the page read
            self.thresholds = self.operating.vector()  # (nc,) float32
        except BaseException:
            self.backend.close()
            raise
        self._pre = Preprocessor(self.metadata.imgsz, self.metadata.preprocess)
        self._name_table = np.array(
            [self.metadata.names[i] for i in range(self.metadata.nc)], dtype=str
        )  # (nc,)
        self.timings = Timings()

    # -- properties ---------------------------------------------------------------------------
    @property
    def names(self) -> dict[int, str]:
        """Class id -> name."""
        return dict(self.metadata.names)

    @property
    def imgsz(self) -> tuple[int, int]:
        """Network input (H, W)."""
        return self.metadata.imgsz

    def _check_io(self) -> None:
        """The model's tensors must agree with its metadata (catches a sidecar of another model)."""
        m, where = self.metadata, self.metadata.source
        spec = self.backend.input_spec()
        if m.input_name and m.input_name != spec.name:
            raise MetadataError(
                f"{where}: input_name {m.input_name!r} but the model's input is {spec.name!r}"
            )
        if len(spec.shape) != 4 or any(
            s is not None and s != t for s, t in zip(spec.shape[1:], m.input_shape()[1:])
        ):
            raise MetadataError(
                f"{where}: imgsz {list(m.imgsz)} in layout {m.preprocess.layout} but the model input "
                f"{spec.name!r} has shape {spec.shape}"
            )
        if (spec.dtype == np.uint8) != (m.preprocess.dtype == "uint8"):
            raise MetadataError(
                f"{where}: preprocess.dtype {m.preprocess.dtype!r} but the model input {spec.name!r} "
                f"takes {spec.dtype}; export again or fix the sidecar"
            )
        out = self.backend.output_specs()[0].shape
        if m.end2end:
            if len(out) != 3 or out[2] != 6:
                raise MetadataError(
                    f"{where}: output_layout {m.output_layout!r} wants (B, N, 6), the model gives {out}"
                )
            return
        if len(out) != 3 or (out[1] is not None and out[1] != 4 + m.nc):
            raise MetadataError(
                f"{where}: {m.nc} class names need output (B, {4 + m.nc}, anchors) in layout 'xywh+cls', the "
                f"model gives {out}"
            )
        if out[2] is not None and out[2] != m.anchors():
            raise MetadataError(
                f"{where}: strides {list(m.strides)} at imgsz {list(m.imgsz)} give {m.anchors()} anchors, "
                f"the model gives {out[2]}"
            )

    # -- inference ----------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> Detections:
        """Detect defects in one BGR frame (uint8, (h, w, 3); grey (h, w) is accepted)."""
        return self.infer_batch([frame])[0]

    def infer_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in several frames at once (batched through the backend); one Detections per frame."""
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        if not frames:
            return []
        if self.stageable:
            return self._detect(frames)
        out, acc = [], np.zeros(3)
        for frame in frames:
            out.append(self._detect_views(as_bgr(frame)))
            acc += (self.timings.pre, self.timings.infer, self.timings.post)
        self.timings = Timings(*map(float, acc))
        return out

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[Detections]:
        """Detections for each frame of ``frames``, in order, letterboxing frame n+1 on a helper thread
        while the model runs frame n (ONNX Runtime and TensorRT release the GIL, so do OpenCV's
        resize and copy). The counterpart of ultralytics ``predict(stream=True)``, which runs its stages
        one after another. ``timings`` holds the last frame's pre / infer / post. A tiled or flipping
        Detector runs frame by frame. Frames are read from ``frames`` in the calling thread. It pays where
        the CPU idles while the model runs (a GPU backend); on a CPU that ONNX Runtime keeps busy it
        measured level with frame-by-frame calls (bench/runtime.py path (d), docs/benchmarks.md)."""
        if not self.stageable:
            for frame in frames:
                yield self(frame)
            return
        pres = (
            self.new_preprocessor(),
            self.new_preprocessor(),
        )  # frame n's buffer is not touched while n+1 is made

        def prepare(pre: Preprocessor, frame: np.ndarray) -> tuple[Any, Any, float]:
            t = time.perf_counter()
            batch, params = pre([frame])
            return batch, params, (time.perf_counter() - t) * 1e3

        it = iter(frames)
        with ThreadPoolExecutor(1, thread_name_prefix="detector-pre") as pool:
            frame, i = next(it, None), 0
            job = pool.submit(prepare, pres[0], frame) if frame is not None else None
            while job is not None:
                batch, params, pre_ms = job.result()
                frame = next(it, None)
                job = pool.submit(prepare, pres[(i + 1) % 2], frame) if frame is not None else None
                t1 = time.perf_counter()
                pred = self.forward(batch)
                t2 = time.perf_counter()
                dets = self.decode(pred[0], params[0])
                self.timings = Timings(pre_ms, (t2 - t1) * 1e3, (time.perf_counter() - t2) * 1e3)
                i += 1
                yield dets

    # -- the three stages, for callers that run them on separate threads (a pipelined loop) ----
    @property
    def stageable(self) -> bool:
        """True when one frame is exactly :meth:`forward` between :meth:`new_preprocessor` and
        :meth:`decode` (no tiles, no flips)."""
        return self.tiles is None and self.tta == "none"

    def new_preprocessor(self) -> Preprocessor:
        """Own-buffer Preprocessor, one per frame in flight: ``pre([frame])`` -> (batch, params)."""
        return Preprocessor(self.metadata.imgsz, self.metadata.preprocess)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The batch :meth:`new_preprocessor` makes ((B, 3, H, W) float32, or uint8 as the model records) ->
        the model's first output as float32, (B, 4+nc, A) or (B, N, 6); releases the GIL inside the
        backend."""
        return _float32(self.backend.infer(batch)[0])

    @property
    def in_flight(self) -> int:
        """How many batches :meth:`submit` can have running at once: 2 for a TensorRT engine with two
        slots (the copies and compute of one frame overlap another's), 1 when the backend only runs
        one call at a time (ONNX Runtime; a dynamic-batch engine)."""
        slots = getattr(self.backend, "slots", 1)
        return (
            slots
            if isinstance(slots, int) and slots > 1 and callable(getattr(self.backend, "submit", None))
            else 1
        )

    def submit(self, batch: np.ndarray) -> int:
        """Start :meth:`forward` on ``batch`` without waiting (``in_flight`` > 1); returns a ticket.

        The input is copied into the backend's own buffer before this returns, so the preprocessor's
        buffer may be reused at once. Results come back in submission order from :meth:`collect`.
        """
        if self.in_flight == 1:
            raise BackendError(
                f"{self.model_path}: the {self.backend.name} backend runs one call at a time; use forward()"
            )
        return self.backend.submit(batch)

    def collect(self) -> tuple[int, np.ndarray]:
        """Wait for the oldest :meth:`submit` and return (its ticket, the model's first output as float32)."""
        ticket, outputs = self.backend.collect()
        return ticket, _float32(outputs[0])

    def decode(self, pred: np.ndarray, params: Any) -> Detections:
        """One image's output ((4+nc, A) or (N, 6)) and LetterboxParams -> Detections in frame pixels."""
        return postprocess(
            pred, params, self.thresholds, self._name_table, self.iou, self.max_det, self.metadata.end2end
        )

    def _detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Pre-process into one batch, run the backend, post-process each image."""
        t0 = time.perf_counter()
        batch, params = self._pre(frames)  # (B, 3, H, W) float32
        t1 = time.perf_counter()
        pred = self.forward(batch)  # (B, 4+nc, A) or (B, N, 6)
        t2 = time.perf_counter()
        dets = [self.decode(pred[i], p) for i, p in enumerate(params)]
        t3 = time.perf_counter()
        self.timings = Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return dets

    def _detect_views(self, frame: np.ndarray) -> Detections:
        """Detect on every tile x flip of the frame (one backend batch), merge in frame pixels."""
        t0, spent = time.perf_counter(), np.zeros(3)

        def predict(views: Sequence[np.ndarray]) -> list[Detections]:
            dets = self._detect(views)
            spent[:] = (self.timings.pre, self.timings.infer, self.timings.post)
            return dets

        merged = detect_views(
            frame, predict, self.tta, self.tiles, self.overlap, self.imgsz, self.iou, self.max_det
        )
        total = (time.perf_counter() - t0) * 1e3
        self.timings = Timings(spent[0], spent[1], max(total - spent[0] - spent[1], spent[2]))
        return merged

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend (device buffers, sessions); safe to call twice."""
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Detector({self.model_path.name}, backend={self.backend.name}, imgsz={list(self.imgsz)}, "
            f"classes={list(self.metadata.names.values())}, conf={self.conf}, iou={self.iou}"
            + (f", tta={self.tta}" if self.tta != "none" else "")
            + (f", tiles={self.tiles}" if self.tiles is not None else "")
            + ")"
        )
