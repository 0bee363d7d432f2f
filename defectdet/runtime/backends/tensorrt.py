"""TensorRT backend (Jetson): deserialize a plan, run it with pycuda buffers allocated once.

Works with the TensorRT Python API of JetPack 5.1.x (8.5.2), 6.0 (8.6), 6.1/6.2 (10.3) and newer (10.x,
11.x), which share name-based I/O (``num_io_tensors``, ``get_tensor_name``/``mode``/``shape``/``dtype``,
``get_tensor_profile_shape``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and
``Runtime.DLA_core``: all bound in NVIDIA/TensorRT's 8.5.2 ``python/src/infer/pyCore.cpp``, none of the
name-based ones in 8.4's (so 8.4 and older are not supported). I/O dtypes are mapped here, not with
``tensorrt.nptype``, which 8.5.2 breaks on numpy 1.24-1.26 (:data:`.tensorrt_buffers.NUMPY_DTYPES`).
Page-locked host buffers and device buffers are allocated once, every copy is asynchronous, every CUDA call is
checked (pycuda raises; we re-raise naming the step) and every TensorRT call that reports failure by returning
False/None is checked. ``close()`` frees all of it.

Two ways to run it:

* ``infer(batch)``: synchronous, as every backend (a submit followed by its collect).
* ``submit(chunk) -> ticket`` / ``collect() -> (ticket, outputs)``: asynchronous, double-buffered. A
  static-shape engine gets two *slots* (:mod:`.tensorrt_buffers`), each with its own execution
  context, stream, page-locked and device buffers and a completion event: TensorRT cannot have two
  enqueues in flight on one context with different tensor addresses, so two frames in flight take two
  contexts (each holds its own activation memory). ``submit`` copies the chunk into the next free
  slot and enqueues host-to-device copy, inference and device-to-host copy on that slot's stream,
  then returns; ``collect`` waits on the oldest slot's event (not a device- or stream-wide
  synchronisation) and returns copies of its outputs. So the copy and compute of frame n+1 run while
  the caller post-processes frame n::

      t0 = backend.submit(x0)
      for x in rest:
          t = backend.submit(x)               # frame n+1 goes to the GPU
          ticket, outs = backend.collect()     # frame n's outputs (FIFO: tickets come back in order)
          ...post-process outs...
      ticket, outs = backend.collect()

  At most ``backend.slots`` chunks are in flight; a further ``submit`` raises until one is collected.
  A dynamic-shape engine gets one slot (one optimisation profile serves one context at a time), so
  ``submit``/``collect`` work but do not overlap there. ``infer`` refuses while submitted chunks wait.

A lock serialises ``infer``, ``submit``, ``collect`` and ``close`` (the contexts and buffers are
shared state): ``close`` during an ``infer`` waits for it, and any call after ``close`` raises. The
lock is held while ``collect`` waits on its event, so a ``submit`` from another thread starts after
that wait; the GPU keeps working on what was already enqueued meanwhile.

An engine built for a DLA core (``build-engine --dla-core N``) is deserialized with the runtime's
``DLA_core`` set to N: the ``dla_core`` option, else the engine header's ``dla``, else the sidecar's
``engine.dla_core``.

``tensorrt`` and ``pycuda`` are imported here only, when the backend is constructed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...artifact import ModelCard, read_engine_header, sidecar_path
from .base import Backend, BackendError, BackendUnavailable, TensorSpec
from .tensorrt_buffers import Slot, TensorInfo, describe_io

LOG = logging.getLogger("defectdet.runtime")

INSTALL_HINT = (
    "the TensorRT backend needs the 'tensorrt' and 'pycuda' Python modules. On the Jetson: TensorRT's "
    "Python bindings come with JetPack (sudo apt install python3-libnvinfer; a virtualenv needs "
    "--system-site-packages to see them), and pycuda builds against JetPack's CUDA "
    "(export PATH=/usr/local/cuda/bin:$PATH; pip install 'defectdet[jetson]'). "
    "Elsewhere run the .onnx model with backend='onnxruntime'"
)


def import_tensorrt(model_path: str | os.PathLike = "") -> tuple[Any, Any]:
    """Import ``tensorrt`` and ``pycuda.driver``; raise BackendUnavailable saying what to install, or,
    for a module that is installed but fails to load, keeping its cause (:func:`import_failure`)."""
    trt = cuda = None
    problems = []
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError / RuntimeError from a library it loads
        problems.append(import_failure("tensorrt", e))
    try:
        import pycuda.driver as cuda
    except Exception as e:
        problems.append(import_failure("pycuda", e))
    if problems:
        where = f"{model_path}: " if model_path else ""
        raise BackendUnavailable(f"{where}{'; '.join(problems)}: {INSTALL_HINT}")
    return trt, cuda


def import_failure(module: str, error: BaseException) -> str:
    """``"tensorrt not installed"``, or ``"tensorrt failed to import (OSError: libcuda.so.1: cannot open
    shared object file ...)"`` when the module is there but something it loads is not (a container
    started without the NVIDIA runtime, a JetPack without its CUDA libraries)."""
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == module:
        return f"{module} not installed"
    cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{module} failed to import ({type(error).__name__}: {cause[:200]})"


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


def engine_dla_core(model_path: Path, header: dict[str, Any], option: int | None) -> int | None:
    """The DLA core to load on: the option, else the header's ``dla``, else sidecar ``engine.dla_core``."""
    core, where = option, "the dla_core option"
    if core is None and header.get("dla") is not None:
        core, where = header["dla"], f"{model_path}'s header 'dla'"
    side = sidecar_path(model_path)
    if core is None and side.is_file():
        core, where = (ModelCard.load(model_path).engine or {}).get("dla_core"), f"{side} engine.dla_core"
    if core is None:
        return None
    if (
        isinstance(core, str) and core.strip().isdigit()
    ):  # ultralytics writes the core as a string: "dla": "0"
        core = int(core.strip())
    if isinstance(core, bool) or not isinstance(core, int) or core < 0:
        raise BackendError(
            f"{where}: DLA core {core!r}; expected a core number 0 or 1 (AGX/NX Orin, AGX Xavier, Xavier NX)"
        )
    return core


class TensorRTBackend(Backend):
    """A deserialized TensorRT engine on one CUDA device (the device's primary context)."""

    name = "tensorrt"

    def __init__(self, model_path: str | os.PathLike, device: int = 0, dla_core: int | None = None):
        """Load ``model_path`` (a plan, maybe behind an ultralytics metadata header) on GPU ``device``."""
        self.model_path = Path(model_path)
        self._trt, self._cuda = import_tensorrt(self.model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: engine file not found")
        self._ctx = self.engine = self.runtime = None
        self._tensors: list[TensorInfo] = []
        self._slots: list[Slot] = []
        self._pending: collections.deque[Slot] = collections.deque()  # submitted, not collected (FIFO)
        self._tickets = 0
        self._lock = threading.RLock()  # infer / submit / collect / close: one at a time
        self._closed = False
        offset, self._meta = read_engine_header(self.model_path)
        self.dla_core = engine_dla_core(self.model_path, self._meta, dla_core)
        with open(self.model_path, "rb") as f:
            f.seek(offset)  # skip the ultralytics header, if any
            plan = f.read()
        self._ctx = self._cuda_call("initialise the device", self._open_context, device)
        try:
            self._load(plan)
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

    def _errors(self) -> str:
        return "; ".join(self._logger.errors[-3:]) or "no reason logged"

    # -- loading ------------------------------------------------------------------------------
    def _load(self, plan: bytes) -> None:
        trt = self._trt
        self._logger = _make_logger(trt)
        self.runtime = trt.Runtime(self._logger)
        if self.dla_core is not None:
            cores = self.runtime.num_DLA_cores
            if self.dla_core >= cores:
                raise BackendError(
                    f"{self.model_path}: built for DLA core {self.dla_core}, this device has {cores} "
                    "DLA core(s): rebuild it here without --dla-core (or with a core it has)"
                )
            self.runtime.DLA_core = self.dla_core  # before deserializing: the engine runs on this core
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError(
                f"{self.model_path}: TensorRT {trt.__version__} cannot deserialize this engine "
                f"({self._errors()}); an engine only runs on the TensorRT version and GPU that built it: "
                "rebuild it on this device from the .onnx"
            )

    def _new_slot(self, index: int) -> Slot:
        context = self.engine.create_execution_context()
        if context is None:
            raise BackendError(
                f"{self.model_path}: TensorRT could not create an execution context (out of GPU memory?)"
            )
        return Slot(index, context)

    def _allocate(self) -> None:
        """Fix dynamic inputs at the profile's max shape, then give every slot its buffers once."""
        self._tensors = describe_io(self._trt, self.engine, str(self.model_path))
        inputs = [t for t in self._tensors if t.is_input]
        if len(inputs) != 1:
            raise BackendError(
                f"{self.model_path}: expected one image input, the engine has {[t.name for t in inputs]}"
            )
        self._input, self._outputs = inputs[0], [t for t in self._tensors if not t.is_input]
        self.dynamic = -1 in self._input.max_shape
        if self.dynamic:  # (min, opt, max) of profile 0 -> max; one profile serves one context at a time
            low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(self._input.name, 0))
            self._input.max_shape = high
            self.max_batch = high[0]
            # min = max (build-engine --shape, trtexec --shapes): one shape only, so each context is
            # fixed at it once and two slots overlap as on a static engine
            self.dynamic = low != high
        for i in range(1 if self.dynamic else 2):
            slot = self._new_slot(i)
            self._slots.append(slot)
            slot.set_input_shape(self._input, self._input.max_shape, self._outputs, str(self.model_path))
            for o in self._outputs:
                o.max_shape = slot.shapes[o.name]
                if any(d < 0 for d in o.max_shape):
                    raise BackendError(
                        f"{self.model_path}: tensor {o.name!r} has data-dependent shape {o.max_shape}; "
                        "unsupported"
                    )
            slot.allocate(self._cuda, self._cuda_call, self._tensors, str(self.model_path))

    @property
    def slots(self) -> int:
        """How many chunks can be in flight at once (2 for static engines, 1 for dynamic ones)."""
        return len(self._slots)

    @property
    def context(self) -> Any:
        """The first slot's execution context (the one ``infer`` uses when nothing is in flight)."""
        return self._slots[0].context if self._slots else None

    # -- Backend API --------------------------------------------------------------------------
    def input_spec(self) -> TensorSpec:
        t = self._input
        dtype = (
            np.dtype(np.uint8) if t.dtype == np.uint8 else np.dtype(np.float32)
        )  # uint8 engines take bytes; FP16 ones float32
        return TensorSpec(t.name, (None if self.dynamic else t.max_shape[0], *t.max_shape[1:]), dtype)

    def output_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(t.name, (None if self.dynamic else t.max_shape[0], *t.max_shape[1:]), t.dtype)
            for t in self._outputs
        ]

    def embedded_metadata(self) -> dict[str, Any]:
        """The ultralytics header's JSON (names, imgsz, stride, ...), {} for a bare plan."""
        return dict(self._meta)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(
                f"{self.model_path}: the TensorRT backend is closed; create a new one to run the engine"
            )

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            self._check_open()
            if self._pending:
                raise BackendError(
                    f"{self.model_path}: infer() while {len(self._pending)} submitted chunk(s) "
                    "wait: collect() them first"
                )
            self.submit(chunk)
            return self.collect()[1]

    def submit(self, chunk: np.ndarray) -> int:
        """Start a chunk (B <= the engine's batch, C/H/W as ``input_spec``) on a free slot; its ticket."""
        with self._lock:
            self._check_open()
            inp = self._input
            limit = self.max_batch if self.dynamic else inp.max_shape[0]
            if (
                chunk.ndim != 4
                or tuple(chunk.shape[1:]) != inp.max_shape[1:]
                or not 1 <= chunk.shape[0] <= limit
            ):
                raise BackendError(
                    f"{self.model_path}: submit() expects (1..{limit}, "
                    f"{', '.join(map(str, inp.max_shape[1:]))}), got {chunk.shape}"
                )
            free = [s for s in self._slots if s.ticket is None]
            if not free:
                raise BackendError(
                    f"{self.model_path}: {self.slots} chunk(s) already in flight: collect() one before "
                    "submitting"
                )
            slot, rows = free[0], chunk.shape[0]
            if not self.dynamic and rows < limit:  # a static engine takes whole batches: pad, trim at collect
                chunk = np.concatenate([chunk, np.zeros((limit - rows, *chunk.shape[1:]), chunk.dtype)])
            self._push()
            try:
                if self.dynamic and slot.shapes.get(inp.name) != chunk.shape:
                    slot.set_input_shape(inp, chunk.shape, self._outputs, str(self.model_path))
                slot.enqueue(
                    self._cuda, self._cuda_call, chunk, inp, self._outputs, self._errors, str(self.model_path)
                )
            finally:
                self._pop()
            self._tickets += 1
            slot.ticket, slot.rows = self._tickets, rows
            self._pending.append(slot)
            return slot.ticket

    def collect(self) -> tuple[int, list[np.ndarray]]:
        """Wait for the oldest chunk (its slot's event): (its ticket, float32 copies of its outputs)."""
        with self._lock:
            self._check_open()
            if not self._pending:
                raise BackendError(f"{self.model_path}: collect() with nothing submitted")
            slot = self._pending.popleft()
            ticket, slot.ticket = slot.ticket, None  # the slot is free again, whatever happens below
            self._push()
            try:
                self._cuda_call("wait for the inference to finish", slot.done.synchronize)
            finally:
                self._pop()
            return ticket, [
                slot.output_view(o)[: slot.rows].astype(np.float32) for o in self._outputs
            ]  # copies

    def close(self) -> None:
        """Free slots' buffers, contexts, engine, runtime; release the device. Waits for a running call."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._ctx is None:
                return
            try:
                self._push()
                for slot in self._slots:
                    if (
                        slot.stream is not None and slot.ticket is not None
                    ):  # in flight: let its copies land first
                        self._cuda_call("wait for the stream", slot.stream.synchronize)
                    slot.free(self._cuda_call)
                self._slots, self._pending = [], collections.deque()
                self.engine = self.runtime = (
                    None  # release in dependency order (contexts went with the slots)
                )
                self._pop()
            finally:
                ctx, self._ctx = self._ctx, None
                self._cuda_call("release the device", ctx.detach)


def device_identity(device: int = 0) -> dict[str, Any]:
    """What an engine is tied to, on this machine: ``{"gpu", "compute_capability", "dla_cores",
    "tensorrt"}`` (CUDA device ``device``, through pycuda; DLA cores through a TensorRT builder).
    Raises :class:`BackendUnavailable` naming what is missing (no tensorrt/pycuda, no CUDA device)."""
    trt, cuda = import_tensorrt()
    try:
        cuda.init()
        if cuda.Device.count() <= device:
            raise BackendUnavailable(f"no CUDA device {device} (this machine has {cuda.Device.count()})")
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        name = str(dev.name())
    except cuda.Error as e:
        raise BackendUnavailable(f"no usable CUDA device ({e})") from None
    try:
        dla = int(trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores)
    except Exception:  # a builder cannot start: no DLA count, the GPU facts still hold  # noqa: BLE001
        dla = 0
    return {
        "gpu": name,
        "compute_capability": f"{major}.{minor}",
        "dla_cores": dla,
        "tensorrt": str(trt.__version__),
    }
