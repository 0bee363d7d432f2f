"""TensorRT backend (Jetson): deserialize a plan, run it with pycuda buffers allocated once.

Works with the TensorRT Python API of JetPack 6.0 (8.6), 6.1/6.2 (10.3) and newer (10.x, 11.x), which
share name-based I/O (``num_io_tensors``, ``set_tensor_address``, ``execute_async_v3``). Page-locked host
buffers and device buffers are allocated once, every copy is asynchronous on one stream, every
CUDA call is checked (pycuda raises; we re-raise naming the step) and every TensorRT call that
reports failure by returning False/None is checked. ``close()`` frees all of it.

``tensorrt`` and ``pycuda`` are imported here only, when the backend is constructed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...artifact import read_engine_header
from .base import Backend, BackendError, BackendUnavailable, TensorSpec

LOG = logging.getLogger("defectdet.runtime")

INSTALL_HINT = (
    "the TensorRT backend needs the 'tensorrt' and 'pycuda' Python modules. On the Jetson: TensorRT's "
    "Python bindings come with JetPack (sudo apt install python3-libnvinfer; a virtualenv needs "
    "--system-site-packages to see them), and pycuda builds against JetPack's CUDA "
    "(export PATH=/usr/local/cuda/bin:$PATH; pip install 'defectdet[jetson]'). "
    "Elsewhere run the .onnx model with backend='onnxruntime'"
)


def import_tensorrt(model_path: str | os.PathLike = "") -> tuple[Any, Any]:
    """Import ``tensorrt`` and ``pycuda.driver``; raise BackendUnavailable saying what to install."""
    missing = []
    try:
        import tensorrt as trt
    except ImportError:
        trt, _ = None, missing.append("tensorrt")
    try:
        import pycuda.driver as cuda
    except ImportError:
        cuda, _ = None, missing.append("pycuda")
    if missing:
        where = f"{model_path}: " if model_path else ""
        raise BackendUnavailable(f"{where}{' and '.join(missing)} not installed: {INSTALL_HINT}")
    return trt, cuda


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps errors (for our messages) and forwards warnings to logging."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                LOG.error("TensorRT: %s", msg)
            elif int(severity) <= int(trt.ILogger.Severity.WARNING):
                LOG.warning("TensorRT: %s", msg)

    return _Logger()


@dataclass
class _IO:
    """One engine I/O tensor with its buffers (host page-locked, device) sized for ``max_shape``."""

    name: str
    index: int  # I/O tensor index
    is_input: bool
    max_shape: tuple[int, ...]
    dtype: np.dtype
    host: Any = None  # pycuda page-locked numpy array, flat
    device: Any = None  # pycuda DeviceAllocation
    shape: tuple[int, ...] = ()  # current shape (dynamic engines change the batch)


class TensorRTBackend(Backend):
    """A deserialized TensorRT engine on one CUDA device (the device's primary context)."""

    name = "tensorrt"

    def __init__(self, model_path: str | os.PathLike, device: int = 0, dla_core: int | None = None):
        """Load ``model_path`` (a plan, optionally behind an ultralytics metadata header) on GPU ``device``."""
        self.model_path = Path(model_path)
        self._trt, self._cuda = import_tensorrt(self.model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: engine file not found")
        self._ctx = self._stream = self.context = self.engine = self.runtime = None
        self._io: list[_IO] = []
        self._closed = False
        offset, self._meta = read_engine_header(self.model_path)
        with open(self.model_path, "rb") as f:
            f.seek(offset)  # skip the ultralytics header, if any
            plan = f.read()
        self._ctx = self._cuda_call("initialise the device", self._open_context, device)
        try:
            self._load(plan, self._meta.get("dla", dla_core) if dla_core is None else dla_core)
            self._allocate()
        except BaseException:
            with contextlib.suppress(BackendError):
                self._pop()
            self.close()
            raise
        self._pop()

    # -- CUDA helpers -------------------------------------------------------------------------
    def _cuda_call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one pycuda call; a CUDA error becomes a BackendError naming the step."""
        try:
            return fn(*args, **kwargs)
        except self._cuda.Error as e:
            raise BackendError(f"{self.model_path}: CUDA failed to {what}: {e}") from None

    def _open_context(self, device: int) -> Any:
        """Initialise CUDA and make the device's primary context (the one TensorRT uses) current."""
        self._cuda.init()
        count = self._cuda.Device.count()
        if device >= count:
            raise BackendError(f"{self.model_path}: CUDA device {device} requested, {count} present")
        ctx = self._cuda.Device(device).retain_primary_context()
        ctx.push()
        return ctx

    def _push(self) -> None:
        self._cuda_call("make the context current", self._ctx.push)

    def _pop(self) -> None:
        if self._ctx is not None:
            self._cuda_call("release the context", self._cuda.Context.pop)

    # -- loading ------------------------------------------------------------------------------
    def _load(self, plan: bytes, dla_core: int | None) -> None:
        trt = self._trt
        self._logger = _make_logger(trt)
        self.runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            self.runtime.DLA_core = int(dla_core)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            why = "; ".join(self._logger.errors[-3:]) or "no reason logged"
            raise BackendError(
                f"{self.model_path}: TensorRT {trt.__version__} cannot deserialize this engine ({why}); an engine only "
                "runs on the TensorRT version and GPU that built it: rebuild it on this device from the .onnx"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.model_path}: TensorRT could not create an execution context (out of GPU memory?)")

    def _describe_io(self) -> list[_IO]:
        """Name, direction, shape and dtype of every I/O tensor."""
        trt, e = self._trt, self.engine
        out = []
        for i in range(e.num_io_tensors):
            name = e.get_tensor_name(i)
            is_in = e.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            out.append(_IO(name, i, is_in, tuple(e.get_tensor_shape(name)), np.dtype(trt.nptype(e.get_tensor_dtype(name)))))
        return out

    def _set_input_shape(self, io: _IO, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(io.name, shape):
            raise BackendError(f"{self.model_path}: input {io.name!r} shape {shape} is outside the engine's optimisation profile")
        io.shape = tuple(shape)

    def _context_shape(self, io: _IO) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(io.name))

    def _allocate(self) -> None:
        """Fix dynamic inputs at the profile's max shape, then allocate every buffer once."""
        self._io = self._describe_io()
        inputs = [io for io in self._io if io.is_input]
        if len(inputs) != 1:
            raise BackendError(f"{self.model_path}: expected one image input, the engine has {[io.name for io in inputs]}")
        self.dynamic = -1 in inputs[0].max_shape
        for io in inputs:
            shape = io.max_shape
            if self.dynamic:
                profile = self.engine.get_tensor_profile_shape(io.name, 0)
                shape = tuple(profile[2])  # (min, opt, max) -> max
                self.max_batch = shape[0]
            self._set_input_shape(io, shape)
            io.max_shape = shape
        for io in self._io:
            if not io.is_input:
                io.max_shape = io.shape = self._context_shape(io)
            if any(d < 0 for d in io.max_shape):
                raise BackendError(f"{self.model_path}: tensor {io.name!r} has data-dependent shape {io.max_shape}; unsupported")
            size = int(np.prod(io.max_shape))
            io.host = self._cuda_call(f"allocate page-locked memory for {io.name}", self._cuda.pagelocked_empty, size, io.dtype)
            io.device = self._cuda_call(f"allocate device memory for {io.name}", self._cuda.mem_alloc, max(io.host.nbytes, 1))
            if not self.context.set_tensor_address(io.name, int(io.device)):
                raise BackendError(f"{self.model_path}: TensorRT refused the address of tensor {io.name!r}")
        self._stream = self._cuda_call("create a stream", self._cuda.Stream)

    # -- Backend API --------------------------------------------------------------------------
    def input_spec(self) -> TensorSpec:
        io = next(io for io in self._io if io.is_input)
        dtype = np.dtype(np.uint8) if io.dtype == np.uint8 else np.dtype(np.float32)  # uint8 engines take bytes; FP16 ones float32
        return TensorSpec(io.name, (None if self.dynamic else io.max_shape[0], *io.max_shape[1:]), dtype)

    def output_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(io.name, (None if self.dynamic else io.max_shape[0], *io.max_shape[1:]), io.dtype)
            for io in self._io
            if not io.is_input
        ]

    def embedded_metadata(self) -> dict[str, Any]:
        """The ultralytics header's JSON (names, imgsz, stride, ...), {} for a bare plan."""
        return dict(self._meta)

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        if self._closed:
            raise BackendError(f"{self.model_path}: backend is closed")
        cuda, stream = self._cuda, self._stream
        self._push()
        try:
            inp = next(io for io in self._io if io.is_input)
            if self.dynamic and chunk.shape != inp.shape:
                self._set_input_shape(inp, chunk.shape)
                for io in self._io:
                    if not io.is_input:
                        io.shape = self._context_shape(io)
            host_in = inp.host[: chunk.size].reshape(chunk.shape)  # page-locked view
            np.copyto(host_in, chunk, casting="unsafe")  # float32 -> the engine's input dtype (FP16 engines)
            self._cuda_call("copy the input to the device", cuda.memcpy_htod_async, inp.device, host_in, stream)
            if not self.context.execute_async_v3(stream_handle=stream.handle):
                why = "; ".join(self._logger.errors[-3:]) or "no reason logged"
                raise BackendError(f"{self.model_path}: TensorRT failed to enqueue inference ({why})")
            outs = []
            for io in self._io:
                if not io.is_input:
                    view = io.host[: int(np.prod(io.shape))].reshape(io.shape)
                    self._cuda_call(f"copy {io.name} to the host", cuda.memcpy_dtoh_async, view, io.device, stream)
                    outs.append(view)
            self._cuda_call("synchronize the stream", stream.synchronize)
            return [o.astype(np.float32) for o in outs]  # copies: the host buffers are reused by the next call
        finally:
            self._pop()

    def close(self) -> None:
        """Free device and page-locked buffers, the stream, context, engine, runtime; release the device."""
        if self._closed:
            return
        self._closed = True
        if self._ctx is None:
            return
        try:
            self._push()
            for io in self._io:
                if io.device is not None:
                    self._cuda_call(f"free device memory of {io.name}", io.device.free)
                if io.host is not None and hasattr(io.host.base, "free"):
                    self._cuda_call(f"free page-locked memory of {io.name}", io.host.base.free)
                io.device = io.host = None
            self._stream = self.context = self.engine = self.runtime = None  # release in dependency order
            self._pop()
        finally:
            ctx, self._ctx = self._ctx, None
            self._cuda_call("release the device", ctx.detach)
