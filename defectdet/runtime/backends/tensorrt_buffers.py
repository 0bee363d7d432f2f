"""The TensorRT backend's I/O: tensor descriptions and the per-frame *slots* (buffers, context, stream,
event).

A :class:`Slot` is everything one in-flight chunk needs: its own execution context (TensorRT does not
allow two enqueues in flight on one context with different tensor addresses, so two frames in flight
need two contexts), its own stream, page-locked host and device buffers for every I/O tensor, sized
once for the largest shape, and a CUDA event recorded after the last device-to-host copy, so
collecting a result waits for that slot's work only, not for the whole device.

Imported only by :mod:`.tensorrt`, which passes in the ``tensorrt`` and ``pycuda.driver`` modules and
its checked-call helper: nothing here imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .base import BackendError

Call = Callable[
    ..., Any
]  # call(what, fn, *args): runs one pycuda call, a CUDA error -> BackendError naming `what`


@dataclass
class TensorInfo:
    """One engine I/O tensor: name, direction, largest shape, numpy dtype."""

    name: str
    is_input: bool
    max_shape: tuple[int, ...]
    dtype: np.dtype


# TensorRT DataType name -> numpy dtype, for the I/O types numpy can hold (what tensorrt.nptype maps in 10.x).
# Not tensorrt.nptype itself: TensorRT 8.5.1/8.5.2 (JetPack 5.1.x ships 8.5.2) builds its table with `np.bool`
# (NVIDIA/TensorRT tag 8.5.2, python/packaging/tensorrt/__init__.py: `bool: np.bool`; np.bool_ from the 8.5.3
# tag), an alias numpy 1.24-1.26 removed, so on the numpy 1.24 a Python 3.8 venv gets every call raises
# AttributeError (NVIDIA/TensorRT issues #2557, #2567).
NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


def numpy_dtype(trt: Any, engine: Any, name: str, where: str) -> np.dtype:
    """The numpy dtype of tensor ``name``; BF16 / FP8 / FP4 (no numpy equivalent) -> one-line BackendError."""
    dt = engine.get_tensor_dtype(name)
    label = (
        getattr(dt, "name", None) or str(dt).rpartition(".")[2]
    )  # DataType.HALF.name / str(): "DataType.HALF"
    if label not in NUMPY_DTYPES:
        raise BackendError(
            f"{where}: I/O tensor {name!r} is {label}, which numpy (and this backend) cannot hold; expected "
            "FLOAT, HALF, INT8, UINT8, INT32 or BOOL I/O: rebuild the engine keeping float32/float16 I/O "
            "(ModelOpt AutoCast keep_io_types)"
        )
    return np.dtype(NUMPY_DTYPES[label])


def describe_io(trt: Any, engine: Any, where: str) -> list[TensorInfo]:
    """Name, direction, shape (-1 for dynamic axes) and dtype of every I/O tensor, in engine order."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_in = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        out.append(
            TensorInfo(
                name, is_in, tuple(engine.get_tensor_shape(name)), numpy_dtype(trt, engine, name, where)
            )
        )
    return out


@dataclass
class Slot:
    """One frame in flight: context, stream, buffers and the 'done' event (see the module docstring)."""

    index: int
    context: Any  # IExecutionContext owned by this slot
    stream: Any = None  # pycuda Stream
    done: Any = None  # pycuda Event, recorded after the device-to-host copies
    host: dict[str, np.ndarray] = field(default_factory=dict)  # page-locked, flat, sized for max_shape
    device: dict[str, Any] = field(default_factory=dict)  # DeviceAllocation per tensor
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # current shape per tensor
    ticket: int | None = None  # the submit() ticket in flight here, None when free
    rows: int = 0  # real batch rows in flight (the rest is static-batch padding)

    def allocate(self, cuda: Any, call: Call, tensors: list[TensorInfo], where: str) -> None:
        """Page-locked + device memory for every tensor at its max shape; register the addresses."""
        for t in tensors:
            size = int(np.prod(t.max_shape))
            self.host[t.name] = call(
                f"allocate page-locked memory for {t.name}", cuda.pagelocked_empty, size, t.dtype
            )
            dev = call(
                f"allocate device memory for {t.name}", cuda.mem_alloc, max(self.host[t.name].nbytes, 1)
            )
            self.device[t.name] = dev
            if not self.context.set_tensor_address(t.name, int(dev)):
                raise BackendError(
                    f"{where}: TensorRT refused the address of tensor {t.name!r} (slot {self.index})"
                )
        self.stream = call("create a stream", cuda.Stream)
        # BLOCKING_SYNC: collect()'s wait sleeps in the driver instead of spinning a CPU core (the
        # Jetson's cores also decode and post-process); DISABLE_TIMING: no timestamps are read
        flags = cuda.event_flags.BLOCKING_SYNC | cuda.event_flags.DISABLE_TIMING
        self.done = call("create an event", cuda.Event, flags)

    def set_input_shape(
        self, t: TensorInfo, shape: tuple[int, ...], outputs: list[TensorInfo], where: str
    ) -> None:
        """Fix the input's shape on this slot's context; read back the outputs' shapes."""
        if not self.context.set_input_shape(t.name, shape):
            raise BackendError(
                f"{where}: input {t.name!r} shape {shape} is outside the engine's optimisation profile"
            )
        self.shapes[t.name] = tuple(shape)
        for o in outputs:
            self.shapes[o.name] = tuple(self.context.get_tensor_shape(o.name))

    def enqueue(
        self,
        cuda: Any,
        call: Call,
        chunk: np.ndarray,
        inp: TensorInfo,
        outputs: list[TensorInfo],
        errors: Callable[[], str],
        where: str,
    ) -> None:
        """H2D copy, execute_async_v3, D2H copies, then record ``done``: all on this slot's stream."""
        host_in = self.host[inp.name][: chunk.size].reshape(chunk.shape)  # page-locked view
        np.copyto(host_in, chunk, casting="unsafe")  # float32 -> the engine's input dtype (FP16 engines)
        call(
            "copy the input to the device",
            cuda.memcpy_htod_async,
            self.device[inp.name],
            host_in,
            self.stream,
        )
        if not self.context.execute_async_v3(stream_handle=self.stream.handle):
            raise BackendError(f"{where}: TensorRT failed to enqueue inference ({errors()})")
        for o in outputs:
            view = self.output_view(o)
            call(f"copy {o.name} to the host", cuda.memcpy_dtoh_async, view, self.device[o.name], self.stream)
        call("record the completion event", self.done.record, self.stream)

    def output_view(self, o: TensorInfo) -> np.ndarray:
        """The page-locked host buffer of output ``o`` at its current shape (a view, reused next time)."""
        shape = self.shapes[o.name]
        return self.host[o.name][: int(np.prod(shape))].reshape(shape)

    def free(self, call: Call) -> None:
        """Free device and page-locked memory; drop the stream, event and context."""
        for name, dev in self.device.items():
            call(f"free device memory of {name}", dev.free)
        for name, host in self.host.items():
            if hasattr(host.base, "free"):
                call(f"free page-locked memory of {name}", host.base.free)
        self.device, self.host = {}, {}
        self.stream = self.done = self.context = None
