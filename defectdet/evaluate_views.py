"""``defectdet val --tta hflip --tiles native``: validation over test-time views (flips, tiles).

The views and their merge are the station's own (:func:`defectdet.runtime.tta.detect_views`); what runs
the model on each view depends on the model file:

- ``.onnx`` / ``.engine``: the runtime :class:`~defectdet.runtime.Detector` (ONNX Runtime / TensorRT), as
  ``defectdet inspect`` runs it, at the model's fixed input size, at the confidence floor for every class
  (the sidecar's thresholds are not applied: the report calibrates its own);
- ``.pt``: ultralytics' ``predict`` on the views (BGR arrays, one call per frame), at ``imgsz``: given,
  else for tiles the run's training size (a ``crop=native`` run: its native window), else the size
  ``defectdet val`` uses without views (the run's native ``eval_imgsz``, else the checkpoint's own).

Without views (``tta=none``, no tiles) ``defectdet val`` keeps its one ultralytics path
(:func:`defectdet.evaluate.collect_detections`); ``bench/tta.py`` runs every arm through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from . import metrics as M
from .data.formats import label_path
from .errors import ConfigError, DataError
from .evaluate_io import load_model, read_label_arrays
from .runtime.detections import Detections
from .runtime.tta import check_overlap, check_tta, detect_views, parse_tiles

RUNTIME_SUFFIXES = (".onnx", ".engine")


def check_views(tta: Any, tiles: Any, overlap: Any) -> tuple[str, Any, float]:
    """``defectdet val``'s --tta / --tiles / --tile-overlap, checked: one-line errors naming the option."""
    return check_tta(tta, "--tta"), parse_tiles(tiles, "--tiles"), check_overlap(overlap, "--tile-overlap")


def has_views(tta: Any, tiles: Any) -> bool:
    return check_tta(tta) != "none" or parse_tiles(tiles) is not None


class ViewDetector:
    """frame (BGR) -> :class:`Detections` over the views, on the runtime (.onnx/.engine) or ultralytics (.pt).

    ``path``: which ran it ('onnxruntime', 'tensorrt' or 'ultralytics'); ``imgsz``: the model input (H, W).
    """

    def __init__(
        self,
        model: Any,
        nc: int,
        tta: str = "none",
        tiles: Any = None,
        overlap: float = 0.2,
        imgsz: int | None = None,
        conf: float = 0.001,
        iou: float = 0.7,
        device: str = "cpu",
        max_det: int = 300,
        threads: int | None = None,
    ):
        self.tta, self.tiles, self.overlap = check_views(tta, tiles, overlap)
        self.iou, self.max_det, self.model = iou, max_det, Path(str(model))
        self._det: Any = None
        if not hasattr(model, "predict") and self.model.suffix in RUNTIME_SUFFIXES:
            self._open_runtime(nc, imgsz, conf, threads)
        else:  # a .pt path or a loaded ultralytics model
            self._open_ultralytics(model, nc, imgsz, conf, device)

    def _open_runtime(self, nc: int, imgsz: int | None, conf: float, threads: int | None) -> None:
        from .runtime import Detector

        extra = {"threads": int(threads)} if threads else {}
        det = Detector(self.model, conf=conf, iou=self.iou, max_det=self.max_det, **extra)
        if det.metadata.nc != nc:
            det.close()
            raise DataError(
                f"{self.model}: the model has {det.metadata.nc} classes but the data has {nc}; "
                "expected the same classes"
            )
        det.thresholds = np.full(nc, conf, np.float32)  # the floor for every class: no sidecar thresholds
        if imgsz is not None and tuple(det.imgsz) != (int(imgsz), int(imgsz)):
            det.close()
            raise ConfigError(
                f"--imgsz {imgsz}: {self.model.name} runs at its exported input {list(det.imgsz)}; "
                "leave --imgsz out or export again at that size"
            )
        self._det, self.imgsz, self.path = det, tuple(det.imgsz), det.backend.name
        self._predict = det.infer_batch

    def _open_ultralytics(self, model: Any, nc: int, imgsz: int | None, conf: float, device: str) -> None:
        from .artifact import RunInfo

        yolo = load_model(model)
        model_nc = len(getattr(yolo, "names", None) or {})
        if model_nc and model_nc != nc:
            raise DataError(
                f"{self.model}: the model has {model_nc} classes but the data has {nc}; "
                "expected the same classes"
            )
        run = None if hasattr(model, "predict") else RunInfo.find(self.model)
        own = (getattr(yolo.model, "args", None) or {}).get("imgsz", 640)
        if imgsz is None:
            imgsz = (run.imgsz if self.tiles is not None else run.deploy_imgsz) if run is not None else None
        size = int(imgsz or (own if isinstance(own, int) else max(own)))
        kwargs = {"conf": conf, "iou": self.iou, "device": device, "verbose": False, "save": False}
        kwargs.update(imgsz=size, max_det=self.max_det)

        def predict(views: Sequence[np.ndarray]) -> list[Detections]:
            return [Detections.from_ultralytics(r) for r in yolo.predict(list(views), **kwargs)]

        self.imgsz, self.path, self._predict = (size, size), "ultralytics", predict

    def __call__(self, frame: np.ndarray) -> Detections:
        return detect_views(
            frame, self._predict, self.tta, self.tiles, self.overlap, self.imgsz, self.iou, self.max_det
        )

    def close(self) -> None:
        if self._det is not None:
            self._det.close()

    def __enter__(self) -> ViewDetector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_image(path: Path) -> np.ndarray:
    """An image as BGR uint8 (a grey image as three equal planes), or a one-line DataError."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot be read as an image")
    return img


def image_detections(det: Detections, img: Path, shape_hw: Sequence[int], nc: int) -> M.ImageDetections:
    """One image's detections paired with its YOLO labels (pixels)."""
    h, w = int(shape_hw[0]), int(shape_hw[1])
    gt_cls, gt_xyxyn = read_label_arrays(label_path(img), nc)
    return M.ImageDetections(
        boxes=det.xyxy,
        conf=det.confidence,
        cls=det.class_id,
        gt_boxes=gt_xyxyn * np.array([w, h, w, h]),
        gt_cls=gt_cls,
        name=str(img),
    )


def collect_view_detections(detector: ViewDetector, images: list[Path], nc: int) -> list[M.ImageDetections]:
    """Every image through ``detector``, paired with its labels."""
    out = []
    for img in images:
        frame = read_image(img)
        out.append(image_detections(detector(frame), img, frame.shape[:2], nc))
    return out
