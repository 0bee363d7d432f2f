"""The edge runtime: torch-free detection on ONNX Runtime or TensorRT (what runs on the Jetson).

**Must:** nothing here imports torch, ultralytics or ``defectdet.train/losses/export``; tensorrt
and pycuda are imported only inside ``backends/tensorrt.py`` when that backend is constructed.
``tests/test_runtime_notorch.py`` checks it in a fresh interpreter.

    from defectdet.runtime import Detector
    with Detector("model.onnx", conf=0.25) as det:
        detections = det(frame_bgr)
"""

from ..artifact import MetadataError, ModelMetadata, Preprocess, load_metadata, load_thresholds
from .backends import Backend, BackendError, BackendUnavailable, TensorSpec, create_backend
from .detections import Detections
from .detector import Detector, Timings

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Detections",
    "Detector",
    "MetadataError",
    "ModelMetadata",
    "Preprocess",
    "TensorSpec",
    "Timings",
    "create_backend",
    "load_metadata",
    "load_thresholds",
]
