"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where installed.

``providers=None`` picks CUDA then CPU when ``onnxruntime-gpu`` is installed, else CPU. The
TensorRT EP is opt-in (``providers=["TensorrtExecutionProvider", "CUDAExecutionProvider",
"CPUExecutionProvider"]``): it builds an engine at session start, which takes minutes on a Jetson.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ...artifact.onnx_file import explain_load_failure, sniff_onnx
from .base import Backend, BackendError, BackendUnavailable, TensorSpec

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
}


def _spec(arg: Any) -> TensorSpec:
    """onnxruntime NodeArg -> TensorSpec (symbolic dims become None)."""
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(_ORT_DTYPES.get(arg.type, np.float32)))


def session_options(threads: int | None = None) -> Any:
    """The SessionOptions the runtime uses (the benchmark gives the same to every contestant).

    ``session.force_spinning_stop``: the intra-op workers stop spin-waiting when ``run()`` returns,
    so they do not compete with the caller thread's pre/post-processing between frames (on a busy
    2-core machine that competition cost up to tens of ms per frame); spinning resumes inside the
    next ``run()``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxRuntimeBackend(Backend):
    """One ``onnxruntime.InferenceSession`` with a fixed thread count."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike,
        providers: Sequence[Any] | None = None,
        threads: int | None = None,
        input_name: str | None = None,
    ):
        """Open the session.

        Args:
            model_path: the ``.onnx`` file.
            providers: execution providers in priority order; None = CUDA (if available) then CPU.
            threads: intra-op threads (None: onnxruntime's default, one per physical core).
            input_name: the image input; None = the model's first input.
        """
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu; "
                "on a Jetson use the onnxruntime-gpu wheel for your JetPack from the Jetson AI Lab index"
            ) from None
        self.model_path = sniff_onnx(model_path)  # missing, empty, text, zip, random bytes: one line
        options = session_options(threads)
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise explain_load_failure(self.model_path, "onnxruntime", e) from None
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        if len(inputs) != 1:
            raise BackendError(f"{self.model_path}: expected one image input, the model has {names}")
        if input_name is not None and input_name != names[0]:
            raise BackendError(
                f"{self.model_path}: metadata names input {input_name!r} but the model has {names}"
            )
        self._input = _spec(inputs[0])
        self._outputs = [_spec(o) for o in self.session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return self.session.get_providers() if self.session is not None else []

    def input_spec(self) -> TensorSpec:
        return self._input

    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def embedded_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props`` (ultralytics writes names, imgsz, stride, batch, args, ...)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        if self.session is None:
            raise BackendError(f"{self.model_path}: backend is closed")
        if chunk.dtype != self._input.dtype:  # FP16 models take float16
            chunk = chunk.astype(self._input.dtype)
        return self.session.run(self._output_names, {self._input.name: chunk})

    def close(self) -> None:
        self.session = None
