"""TensorRT backend.

* Here (no GPU, no tensorrt/pycuda): ``backend='auto'`` on an ``.engine`` says what to install.
* Always: the backend's control flow runs against a stand-in ``tensorrt`` + ``pycuda.driver`` pair
  (module-level fakes below) whose "GPU" executes the real ONNX model with onnxruntime on the
  bytes copied into fake device memory, through the name-based I/O API that TensorRT 8.5, 8.6, 10.x
  and 11.x share; static and dynamic batch, and failures.
  This checks buffer sizes, copy directions, tensor addressing, batching and freeing — not NVIDIA's
  library, which only the skipped test below exercises.
* On a machine with tensorrt, pycuda and a CUDA device: build a real engine and compare with ORT.
"""

import enum
import importlib.util
import itertools
import json
import sys
import time
import types
from pathlib import Path

import benchscripts
import numpy as np
import pytest

from defectdet.runtime import BackendError, BackendUnavailable, Detector
from defectdet.runtime.backends import create_backend, resolve_backend

ROOT = Path(__file__).resolve().parents[1]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _cuda_device_present() -> bool:
    if not (_has("tensorrt") and _has("pycuda")):
        return False
    import pycuda.driver as cuda

    try:
        cuda.init()
        return cuda.Device.count() > 0
    except cuda.Error:
        return False


# -- stand-in tensorrt / pycuda -------------------------------------------------------------------
class FakeCuda(types.ModuleType):
    """pycuda.driver: device memory is a dict of byte arrays; records what was freed and pushed."""

    class Error(Exception):
        pass

    def __init__(self):
        super().__init__("pycuda.driver")
        self.memory, self.freed, self.stack = {}, [], []
        self.streams, self.log = {}, []  # handle -> Stream; ("op", stream handle) in call order
        self.fail_on: str | None = None
        self._ptr = itertools.count(0x1000, 0x1000)
        cuda = self

        class Alloc:
            def __init__(self, n):
                self.ptr = next(cuda._ptr)
                cuda.memory[self.ptr] = np.zeros(n, np.uint8)

            def __int__(self):
                return self.ptr

            def free(self):
                cuda.freed.append(cuda.memory.pop(self.ptr) is not None)

        class Ctx:
            detached = False

            def push(self):
                cuda.stack.append(self)

            def detach(self):
                Ctx.detached = True

        class Device:
            def __init__(self, i):
                self.i = i

            @staticmethod
            def count():
                return 1

            def retain_primary_context(self):
                return Ctx()

        class Context:
            @staticmethod
            def pop():
                cuda.stack.pop()

        class Stream:
            handles = itertools.count(0xBEEF)

            def __init__(self):
                self.handle = next(Stream.handles)
                cuda.streams[self.handle] = self

            def synchronize(self):
                cuda.log.append(("stream.synchronize", self.handle))

        class Event:  # pycuda.driver.Event(flags=0)
            def __init__(self, flags=0):
                self.stream, self.flags = None, flags

            def record(self, stream):
                assert cuda.stack, "event recorded outside a pushed context"
                self.stream = stream.handle
                cuda.log.append(("event.record", stream.handle))

            def synchronize(self):
                if cuda.fail_on == "event":
                    raise cuda.Error("cuEventSynchronize failed: unspecified launch failure")
                cuda.log.append(("event.synchronize", self.stream))

        self.Alloc, self.Ctx, self.Device, self.Context = Alloc, Ctx, Device, Context
        self.Stream, self.Event = Stream, Event
        # pycuda.driver.event_flags: CUevent_flags' values
        self.event_flags = types.SimpleNamespace(DEFAULT=0, BLOCKING_SYNC=1, DISABLE_TIMING=2, INTERPROCESS=4)

    def init(self):
        pass

    def pagelocked_empty(self, size, dtype):
        return np.empty(size, dtype)

    def mem_alloc(self, n):
        return self.Alloc(n)

    def memcpy_htod_async(self, dev, host, stream):
        if self.fail_on == "htod":
            raise self.Error("cuMemcpyHtoDAsync failed: an illegal memory access was encountered")
        assert self.stack, "copy outside a pushed context"
        self.memory[int(dev)][: host.nbytes] = np.frombuffer(np.ascontiguousarray(host).tobytes(), np.uint8)
        self.log.append(("htod", stream.handle))

    def memcpy_dtoh_async(self, host, dev, stream):
        self.log.append(("dtoh", stream.handle))
        host[...] = np.frombuffer(self.memory[int(dev)][: host.nbytes].tobytes(), host.dtype).reshape(
            host.shape
        )


class Severity(enum.IntEnum):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


def make_fake_trt(cuda: FakeCuda, dynamic: bool = False, profile_max: int = 4) -> types.ModuleType:
    """A tensorrt module whose engines run the ONNX file named in the plan with onnxruntime; a
    ``dynamic`` engine's profile 0 spans batch 1..``profile_max`` (1: min = max)."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"  # 8.5 / 8.6 / 10.x / 11.x share the name-based I/O API faked here
    trt.ILogger = type("ILogger", (), {"Severity": Severity, "__init__": lambda self: None})
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    trt.calls = []
    trt.DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT8 INT32 INT64 BOOL UINT8 FP8")  # 10.3's names
    trt.dtype = trt.DataType.FLOAT  # what get_tensor_dtype reports for the output
    trt.gate = trt.entered = None  # threading.Event pair: execute_async_v3 signals `entered`, waits on `gate`

    class Context:
        def __init__(self, eng):
            self.eng, self.addr, self.shapes = eng, {}, dict(eng.shapes)
            self.fail = False

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def set_input_shape(self, name, shape):
            trt.calls.append(("set_input_shape", tuple(shape)))
            if shape[0] > 4:
                return False
            self.shapes[name] = tuple(shape)
            self.shapes[eng_out(self.eng)] = (shape[0], *self.eng.shapes[eng_out(self.eng)][1:])
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def _execute(self, ptrs):
            if self.fail:
                return False
            x_name, y_name = self.eng.names
            x = np.frombuffer(cuda.memory[ptrs[x_name]].tobytes(), np.float32)[
                : int(np.prod(self.shapes[x_name]))
            ]
            xs = x.reshape(self.shapes[x_name])  # (B, 3, H, W); the ONNX has batch 1: run image by image
            y = np.concatenate(
                [self.eng.session.run(None, {"images": xs[i : i + 1]})[0] for i in range(len(xs))]
            )
            cuda.memory[ptrs[y_name]][: y.nbytes] = np.frombuffer(y.astype(np.float32).tobytes(), np.uint8)
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle in cuda.streams, "not a stream of this device"
            cuda.log.append(("execute", stream_handle, id(self)))
            if trt.gate is not None:  # a test holds the "GPU" here
                trt.entered.set()
                trt.gate.wait(5)
            return self._execute(self.addr)

    def eng_out(eng):
        return eng.names[1]

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            x, y = self.session.get_inputs()[0], self.session.get_outputs()[0]
            self.names = ("images", y.name)
            self.shapes = {"images": tuple(x.shape), y.name: tuple(y.shape)}
            self.max_in = self.shapes["images"]
            if dynamic:
                self.shapes = {k: (-1, *v[1:]) for k, v in self.shapes.items()}
            self.num_io_tensors = 2
            self.contexts = []

        def create_execution_context(self):
            self.contexts.append(Context(self))
            return self.contexts[-1]

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "images" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def get_tensor_dtype(self, name):
            return trt.dtype if name != "images" else trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile):
            return [(1, *self.max_in[1:]), (1, *self.max_in[1:]), (profile_max, *self.max_in[1:])]

    class Runtime:
        DLA_core = -1  # TensorRT's default: no DLA
        num_DLA_cores = 2  # AGX Orin

        def __init__(self, logger):
            self.logger = logger
            trt.runtime = self

        def deserialize_cuda_engine(self, plan):
            trt.calls.append(("deserialize", self.DLA_core))
            if not plan.startswith(b"FAKEPLAN:"):
                self.logger.log(Severity.ERROR, "Serialization assertion magicTagRead == kMAGIC_TAG failed")
                return None
            return Engine(plan[len(b"FAKEPLAN:") :].decode())

    trt.Runtime = Runtime
    return trt


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return benchscripts.stand_in_model(tmp_path_factory.mktemp("trt"), "conveyor96")


@pytest.fixture(scope="module")
def frames():
    from defectdet.data.synthetic import conveyor_frame

    return [conveyor_frame(0, i)[0] for i in (3, 9, 15, 21, 27, 33)]


def _engine(tmp_path, onnx_model, header=True, plan=None):
    """An .engine: optional ultralytics-style header (4-byte LE length + JSON), then the fake plan."""
    eng = tmp_path / "model.engine"
    side = json.loads(onnx_model.with_suffix(".json").read_text())
    plan = plan if plan is not None else b"FAKEPLAN:" + str(onnx_model).encode()
    blob = json.dumps(side).encode()
    eng.write_bytes((len(blob).to_bytes(4, "little") + blob if header else b"") + plan)
    if not header:
        eng.with_suffix(".json").write_text(json.dumps(side))
    return eng


@pytest.fixture
def fake(monkeypatch):
    """Install the stand-ins; returns a function (dynamic) -> (trt, cuda)."""

    def install(dynamic=False, profile_max=4):
        cuda = FakeCuda()
        trt = make_fake_trt(cuda, dynamic, profile_max)
        pycuda = types.ModuleType("pycuda")
        pycuda.driver = cuda
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        return trt, cuda

    return install


def _same(a, b):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-6)
    assert np.array_equal(a.class_id, b.class_id)


@pytest.mark.parametrize("header", [True, False], ids=["header", "sidecar"])
def test_engine_matches_onnx_and_frees_everything(fake, tmp_path, onnx_model, frames, header):
    trt, cuda = fake()
    eng = _engine(tmp_path, onnx_model, header=header)
    with Detector(onnx_model, conf=0.1) as ref, Detector(eng, conf=0.1) as det:
        assert det.backend.name == "tensorrt" and det.names == ref.names
        total = 0
        for f in frames:
            a, b = det(f), ref(f)
            _same(a, b)
            total += len(a)
        assert total > 0
        n_alloc = len(cuda.memory)
        assert (
            n_alloc == 4 and cuda.stack == []
        )  # two slots x (one input + one output buffer); every push popped
        assert (
            "stream.synchronize",
            0xBEEF,
        ) not in cuda.log  # infer waits on the slot's event, not the stream
    assert cuda.memory == {} and cuda.freed == [True] * 4 and cuda.Ctx.detached
    det.close()  # idempotent


def test_tensorrt_852_with_numpy_124_runs(fake, tmp_path, onnx_model, frames):
    """JetPack 5.1.x: TensorRT 8.5.2's own ``tensorrt.nptype`` raises AttributeError on numpy 1.24-1.26 (its
    table names ``np.bool``; NVIDIA/TensorRT#2557), which a Python 3.8 venv gets; 8.5 has the name-based I/O
    and ``execute_async_v3`` faked here (8.5.2 python/src/infer/pyCore.cpp), so the backend runs there."""
    trt, cuda = fake()
    trt.__version__ = "8.5.2.2"

    def nptype(dt):  # what 8.5.2's python/packaging/tensorrt/__init__.py does under numpy 1.24
        raise AttributeError("module 'numpy' has no attribute 'bool'.")

    trt.nptype = nptype
    with Detector(onnx_model, conf=0.1) as ref, Detector(_engine(tmp_path, onnx_model), conf=0.1) as det:
        assert det.backend.output_specs()[0].dtype == np.float32
        for f in frames[:2]:
            _same(det(f), ref(f))
    assert cuda.memory == {}


def test_dynamic_batch_engine_chunks_by_profile(fake, tmp_path, onnx_model, frames):
    """Batch 6 on a (-1, 3, H, W) engine whose profile max is 4: chunks of 4 and 2, shapes set each time."""
    trt, cuda = fake(dynamic=True)
    with Detector(_engine(tmp_path, onnx_model), conf=0.1) as det, Detector(onnx_model, conf=0.1) as ref:
        assert det.backend.max_batch == 4
        for a, f in zip(det.infer_batch(frames), frames):
            _same(a, ref(f))
    shapes = [c[1][0] for c in trt.calls if c[0] == "set_input_shape"]
    assert shapes == [4, 2]  # allocated at the profile max (the 4-chunk needs no change), then the tail of 2
    assert cuda.memory == {}


def test_undeserializable_engine_says_rebuild_and_frees(fake, tmp_path, onnx_model):
    _, cuda = fake()
    eng = _engine(tmp_path, onnx_model, plan=b"garbage-from-another-version")
    with pytest.raises(BackendError, match=r"cannot deserialize .*magicTagRead.*rebuild it on this device"):
        Detector(eng)
    assert cuda.memory == {} and cuda.stack == []


def test_cuda_failure_names_the_step(fake, tmp_path, onnx_model, frames):
    _, cuda = fake()
    with Detector(_engine(tmp_path, onnx_model)) as det:
        cuda.fail_on = "htod"
        with pytest.raises(
            BackendError, match="CUDA failed to copy the input to the device: .*illegal memory"
        ):
            det(frames[0])
        assert cuda.stack == []  # the context was popped on the error path
        cuda.fail_on = None
        det.backend.context.fail = True
        with pytest.raises(BackendError, match="failed to enqueue"):
            det(frames[0])


def _batch(det, frame):
    """One letterboxed (1, 3, H, W) float32 input, as the Detector feeds the backend."""
    from defectdet.runtime.preprocess import Preprocessor

    return Preprocessor(det.imgsz, det.metadata.preprocess)([frame])[0]


def _sidecar_engine(tmp_path, onnx_model, **engine_section):
    eng = _engine(tmp_path, onnx_model, header=False)
    side = json.loads(eng.with_suffix(".json").read_text())
    side["engine"] = engine_section
    eng.with_suffix(".json").write_text(json.dumps(side))
    return eng


def test_dla_engine_is_deserialized_on_its_core(fake, tmp_path, onnx_model):
    """The core comes from the option, else the header's 'dla', else the sidecar's engine.dla_core,
    and is set on the runtime before deserialize_cuda_engine."""
    from defectdet.runtime.backends.tensorrt import TensorRTBackend

    trt, _ = fake()
    with TensorRTBackend(_sidecar_engine(tmp_path, onnx_model, dla_core=1)) as b:
        assert b.dla_core == 1 and trt.runtime.DLA_core == 1
    with TensorRTBackend(_sidecar_engine(tmp_path, onnx_model, dla_core=1), dla_core=0) as b:
        assert b.dla_core == 0
    with TensorRTBackend(_sidecar_engine(tmp_path, onnx_model, dla_core=None)) as b:
        assert b.dla_core is None
    assert [c[1] for c in trt.calls if c[0] == "deserialize"] == [1, 0, -1]  # -1: DLA_core left alone
    side = json.loads(onnx_model.with_suffix(".json").read_text())
    blob = json.dumps({**side, "dla": "1"}).encode()  # as ultralytics writes it: the core as a string
    hdr = tmp_path / "hdr.engine"
    hdr.write_bytes(len(blob).to_bytes(4, "little") + blob + b"FAKEPLAN:" + str(onnx_model).encode())
    with TensorRTBackend(hdr) as b:
        assert b.dla_core == 1


def test_dla_core_errors_are_one_line(fake, tmp_path, onnx_model):
    from defectdet.runtime.backends.tensorrt import TensorRTBackend

    trt, cuda = fake()
    trt.Runtime.num_DLA_cores = 0  # Orin Nano
    with pytest.raises(BackendError, match=r"built for DLA core 1, this device has 0 DLA core\(s\)"):
        TensorRTBackend(_sidecar_engine(tmp_path, onnx_model, dla_core=1))
    assert cuda.memory == {} and cuda.stack == []
    with pytest.raises(BackendError, match=r"engine.dla_core: DLA core 'x'; expected a core number"):
        TensorRTBackend(_sidecar_engine(tmp_path, onnx_model, dla_core="x"))


@pytest.mark.parametrize("dtype", ["BF16", "FP8"])
def test_io_dtype_without_numpy_equivalent_is_one_line(fake, tmp_path, onnx_model, dtype):
    trt, cuda = fake()
    trt.dtype = trt.DataType[dtype]
    with pytest.raises(BackendError, match=rf"I/O tensor '\w+' is {dtype}, which numpy .* cannot hold"):
        Detector(_engine(tmp_path, onnx_model))
    assert cuda.memory == {} and cuda.stack == []


def test_close_waits_for_a_running_infer_then_infer_refuses(fake, tmp_path, onnx_model, frames):
    import threading

    trt, cuda = fake()
    det = Detector(_engine(tmp_path, onnx_model), conf=0.1)
    trt.gate, trt.entered = threading.Event(), threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("n", len(det(frames[0]))))
    worker.start()
    assert trt.entered.wait(5)  # infer is inside execute_async_v3
    closer = threading.Thread(target=det.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and cuda.memory  # close waits: the buffers are still there
    trt.gate.set()
    worker.join(5)
    closer.join(5)
    assert "n" in result and cuda.memory == {} and not closer.is_alive()
    with pytest.raises(BackendError, match="the TensorRT backend is closed"):
        det.backend.infer(np.zeros((1, 3, 96, 96), np.float32))


def test_submit_collect_rotates_two_slots_in_order(fake, tmp_path, onnx_model, frames):
    """Two contexts, their own buffers and streams; tickets come back FIFO with their own frame's outputs."""
    trt, cuda = fake()
    with Detector(_engine(tmp_path, onnx_model), conf=0.1) as det, Detector(onnx_model) as ref:
        b = det.backend
        assert b.slots == 2
        xs = [_batch(det, f) for f in frames[:4]]
        want = [ref.backend.infer(x)[0] for x in xs]
        c0, c1 = b._slots[0].context, b._slots[1].context
        assert c0 is not c1 and set(c0.addr.values()).isdisjoint(c1.addr.values())
        t0, t1 = b.submit(xs[0]), b.submit(xs[1])
        with pytest.raises(BackendError, match="2 chunk\\(s\\) already in flight: collect\\(\\) one"):
            b.submit(xs[2])
        with pytest.raises(BackendError, match="infer\\(\\) while 2 submitted chunk"):
            b.infer(xs[2])
        got = [b.collect()]
        t2 = b.submit(xs[2])  # reuses slot 0 while slot 1 still holds frame 1
        got += [b.collect(), b.collect()]
        t3 = b.submit(xs[3])
        got.append(b.collect())
        assert [t for t, _ in got] == [t0, t1, t2, t3] == sorted({t0, t1, t2, t3})
        for (_, outs), w in zip(got, want):
            np.testing.assert_allclose(outs[0], w, atol=1e-5)
        execs = [e for e in cuda.log if e[0] == "execute"]
        assert [e[2] for e in execs[-4:]] == [id(c0), id(c1), id(c0), id(c0)]  # slot 0, 1, then the free one
        s0, s1 = b._slots[0].stream.handle, b._slots[1].stream.handle
        first = cuda.log[cuda.log.index(("execute", s0, id(c0))) - 1 :][:5]
        assert first == [
            ("htod", s0),
            ("execute", s0, id(c0)),
            ("dtoh", s0),
            ("event.record", s0),
            ("htod", s1),
        ]
        assert not any(e[0] == "stream.synchronize" for e in cuda.log)  # events only
        with pytest.raises(BackendError, match="collect\\(\\) with nothing submitted"):
            b.collect()


def test_submit_checks_its_input_and_a_failed_wait_frees_the_slot(fake, tmp_path, onnx_model, frames):
    _, cuda = fake()
    with Detector(_engine(tmp_path, onnx_model)) as det:
        b, x = det.backend, _batch(det, frames[0])
        with pytest.raises(
            BackendError, match=r"submit\(\) expects \(1\.\.1, 3, 96, 96\), got \(2, 3, 96, 96\)"
        ):
            b.submit(np.concatenate([x, x]))
        b.submit(x)
        cuda.fail_on = "event"
        with pytest.raises(
            BackendError, match="CUDA failed to wait for the inference to finish: .*launch failure"
        ):
            b.collect()
        cuda.fail_on = None
        assert cuda.stack == [] and all(s.ticket is None for s in b._slots)
        assert b.infer(x)[0].shape == (1, *b.output_specs()[0].shape[1:])  # the backend still runs


def test_dynamic_engine_has_one_slot(fake, tmp_path, onnx_model, frames):
    """One optimisation profile serves one context at a time: a dynamic engine runs submit/collect in turn."""
    fake(dynamic=True)
    with Detector(_engine(tmp_path, onnx_model)) as det:
        b, x = det.backend, _batch(det, frames[0])
        assert b.slots == 1
        t = b.submit(np.concatenate([x, x, x]))
        with pytest.raises(BackendError, match="1 chunk\\(s\\) already in flight"):
            b.submit(x)
        ticket, outs = b.collect()
        assert ticket == t and outs[0].shape[0] == 3


def test_a_dynamic_input_whose_profile_is_one_shape_runs_as_static(fake, tmp_path, onnx_model, frames):
    """min = max (build-engine --shape, trtexec --shapes): two slots, each context fixed once, overlap."""
    trt, cuda = fake(dynamic=True, profile_max=1)
    with Detector(_engine(tmp_path, onnx_model)) as det:
        b, x = det.backend, _batch(det, frames[0])
        assert b.slots == 2 and b.input_spec().shape[0] == 1
        t0, t1 = b.submit(x), b.submit(x)
        assert [b.collect()[0], b.collect()[0]] == [t0, t1]
        assert [c for c in trt.calls if c[0] == "set_input_shape"] == [
            ("set_input_shape", (1, 3, 96, 96))
        ] * 2


def test_completion_events_sleep_instead_of_spinning_a_core(fake, tmp_path, onnx_model):
    """collect() waits on each slot's event: created BLOCKING_SYNC, or cuEventSynchronize spins a CPU core."""
    _, cuda = fake()
    with Detector(_engine(tmp_path, onnx_model)) as det:
        flags = [s.done.flags for s in det.backend._slots]
    assert len(flags) == 2 and all(f & cuda.event_flags.BLOCKING_SYNC for f in flags)
    assert all(f & cuda.event_flags.DISABLE_TIMING for f in flags)


@pytest.mark.parametrize("module", ["tensorrt", "pycuda"])
def test_an_import_failure_keeps_its_cause(monkeypatch, tmp_path, module):
    """Installed but not loadable (a container without the NVIDIA runtime): the line says why."""
    from defectdet.runtime.backends.tensorrt import import_tensorrt

    pkg = tmp_path / module
    pkg.mkdir()
    cause = "libcuda.so.1: cannot open shared object file: No such file or directory"
    (pkg / "__init__.py").write_text(f"raise ImportError({cause!r})\n")
    if module == "pycuda":
        (pkg / "driver.py").write_text("")
    for name in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailable) as e:
        import_tensorrt("m.engine")
    msg = str(e.value)
    assert f"{module} failed to import (ImportError: {cause})" in msg and "\n" not in msg


# -- without tensorrt / pycuda (this machine, CI) ---------------------------------------------------
@pytest.mark.skipif(_has("tensorrt") and _has("pycuda"), reason="tensorrt and pycuda are installed here")
def test_engine_without_tensorrt_says_what_to_install(tmp_path, onnx_model):
    eng = _engine(tmp_path, onnx_model)
    with pytest.raises(BackendUnavailable) as e:
        Detector(eng)
    msg = str(e.value)
    assert (
        str(eng) in msg and "python3-libnvinfer" in msg and "pycuda" in msg and "backend='onnxruntime'" in msg
    )


def test_tensorrt_backend_refuses_an_onnx_file():
    with pytest.raises(BackendError, match="runs a built .engine"):
        resolve_backend("model.onnx", "tensorrt")
    with pytest.raises(BackendError, match="expected one of"):
        resolve_backend("model.onnx", "openvino")
    assert resolve_backend("m.engine") == "tensorrt" and resolve_backend("m.onnx", "ort") == "onnxruntime"
    with pytest.raises(TypeError, match="unknown backend option.*thread;"):
        create_backend("m.onnx", thread=4)


# -- real TensorRT (Jetson / GPU machine) -----------------------------------------------------------
@pytest.mark.skipif(not _cuda_device_present(), reason="needs tensorrt, pycuda and a CUDA device (a Jetson)")
def test_real_engine_matches_onnxruntime(tmp_path, onnx_model, frames):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = (
        0
        if int(trt.__version__.split(".")[0]) >= 10
        else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_model.read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    assert plan is not None
    eng = tmp_path / "model.engine"
    eng.write_bytes(bytes(plan))
    eng.with_suffix(".json").write_text(onnx_model.with_suffix(".json").read_text())
    with Detector(eng, conf=0.1) as det, Detector(onnx_model, conf=0.1) as ref:
        for f in frames:
            a, b = det(f), ref(f)
            assert abs(len(a) - len(b)) <= 1  # FP32 engine: kernels differ, a box at the threshold may flip
            if len(a) == len(b) and len(a):
                np.testing.assert_allclose(a.sorted().xyxy, b.sorted().xyxy, atol=2.0)
        x0, x1 = _batch(det, frames[0]), _batch(det, frames[1])  # double-buffered path on the device
        want = [det.backend.infer(x)[0] for x in (x0, x1)]
        t0, t1 = det.backend.submit(x0), det.backend.submit(x1)
        got = [det.backend.collect(), det.backend.collect()]
        assert [t for t, _ in got] == [t0, t1]
        for (_, outs), w in zip(got, want):
            np.testing.assert_allclose(outs[0], w, atol=1e-4)


def test_pipelined_loop_overlaps_two_frames_on_a_static_engine(fake, tmp_path, onnx_model, frames):
    """A static engine has two slots: the pipelined loop submits frame n+1 before collecting frame n
    and decides exactly what the sequential loop decides with the ONNX model, in the same order."""
    import cv2

    from defectdet.station.capture import FrameSource
    from defectdet.station.decisions import Decider
    from defectdet.station.loop import InspectionLoop
    from defectdet.station.pipeline import PipelinedLoop
    from defectdet.station.sinks import EventLog, read_events
    from defectdet.station.sources import parse_source

    trt, cuda = fake()
    wait = cuda.Event.synchronize

    def slow_device(self):  # a model much slower than letterboxing: the next frame is always waiting
        time.sleep(0.03)
        return wait(self)

    cuda.Event.synchronize = slow_device
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames * 3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    eng = _engine(tmp_path, onnx_model)
    runs = {}
    for name, loop_cls, model in (("seq", InspectionLoop, onnx_model), ("trt", PipelinedLoop, eng)):
        out = tmp_path / name
        out.mkdir()
        with Detector(model, conf=0.1) as det:
            assert det.in_flight == (2 if name == "trt" else 1)
            if name == "seq":
                with pytest.raises(BackendError, match="runs one call at a time; use forward"):
                    det.submit(np.zeros(det.backend.input_spec().shape[1:], np.float32)[None])
            loop = loop_cls(
                det,
                FrameSource(parse_source(str(folder))),
                Decider(det.names),
                [EventLog(out / "events.jsonl")],
                out_dir=out,
            )
            summary = loop.run()
        assert summary["frames"] == 3 * len(frames) and summary["detector_errors"] == 0
        assert summary["in_flight"] == (2 if name == "trt" else 1)
        runs[name] = [
            (
                e["frame"],
                e["decision"],
                [d["class_id"] for d in e["detections"]],
                [d["xyxy"] for d in e["detections"]],
            )
            for e in read_events(out / "events.jsonl")
        ]
    assert runs["trt"] and [r[:3] for r in runs["trt"]] == [r[:3] for r in runs["seq"]]
    for a, b in zip(runs["trt"], runs["seq"]):
        np.testing.assert_allclose(a[3], b[3], atol=0.05)
    calls = [c[0] for c in cuda.log if c[0] in ("execute", "event.synchronize")]
    assert "execute" in calls and any(a == b == "execute" for a, b in zip(calls, calls[1:])), (
        "no frame was submitted while the one before it was still in flight"
    )
    assert cuda.memory == {}
