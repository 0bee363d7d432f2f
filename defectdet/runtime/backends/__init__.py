"""Inference backends: pick one by name or by the model file's suffix.

``.engine`` / ``.plan`` -> TensorRT (tensorrt + pycuda, Jetson); ``.onnx`` -> ONNX Runtime. Each
backend module imports its library only when a backend is constructed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, BackendUnavailable, TensorSpec

BACKENDS = ("auto", "onnxruntime", "tensorrt")
_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt"}
_OPTIONS = {"onnxruntime": ("providers", "threads", "input_name"), "tensorrt": ("device", "dla_core")}

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "TensorSpec",
    "create_backend",
    "resolve_backend",
]


def resolve_backend(model_path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend name for ``model_path``: explicit, or from the suffix when ``backend='auto'``."""
    name = _ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise BackendError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    suffix = Path(model_path).suffix.lower()
    if name == "auto":
        if suffix not in _BY_SUFFIX:
            raise BackendError(
                f"{model_path}: unknown model type {suffix!r}; expected .onnx (ONNX Runtime) or .engine "
                "(TensorRT)"
            )
        return _BY_SUFFIX[suffix]
    if name == "tensorrt" and suffix == ".onnx":
        raise BackendError(
            f"{model_path}: the TensorRT backend runs a built .engine; build one on the Jetson from this "
            ".onnx, or run the .onnx with backend='onnxruntime' (its TensorRT execution provider: "
            "providers=[...])"
        )
    return name


def create_backend(model_path: str | os.PathLike, backend: str = "auto", **options: Any) -> Backend:
    """Construct the backend for ``model_path``.

    Options: onnxruntime -> ``providers``, ``threads``, ``input_name``; tensorrt -> ``device``, ``dla_core``.
    Options meant for the other backend are ignored (one config serves both); unknown names raise.
    """
    unknown = set(options) - set(_OPTIONS["onnxruntime"]) - set(_OPTIONS["tensorrt"])
    if unknown:
        valid = ", ".join(sorted({*_OPTIONS["onnxruntime"], *_OPTIONS["tensorrt"]}))
        raise TypeError(f"unknown backend option(s) {', '.join(sorted(unknown))}; expected: {valid}")
    name = resolve_backend(model_path, backend)
    kwargs = {k: v for k, v in options.items() if k in _OPTIONS[name]}
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(model_path, **kwargs)
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, **kwargs)
