"""TensorRT engine builder: version routing, option validation and the trtexec line are plain Python
and tested here on every machine; the real build needs tensorrt + a CUDA GPU and skips without them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_data_hostile import bad_png  # hostile / unreadable image files and their one-line messages

from defectdet.errors import ConfigError
from defectdet.export import ExportError
from defectdet.export.tensorrt import (
    EngineOptions,
    ModelInfo,
    build_engine,
    inspect_onnx,
    parse_version,
    plan_build,
    trtexec_command,
)

QDQ_PASSED = ModelInfo(qdq=True, opset=17, gate="pass")
FP32 = ModelInfo(opset=17)
FP16 = ModelInfo(fp16_typed=True, opset=17)


def opts(**kw) -> EngineOptions:
    return EngineOptions(onnx=Path("m/model.onnx"), **kw)


# ----------------------------------------------------------------------------- version routing
def test_parse_version():
    assert parse_version("8.6.2.3") == (8, 6)
    assert parse_version("10.3.0") == (10, 3)
    assert parse_version("11.0") == (11, 0)
    with pytest.raises(ConfigError, match="MAJOR.MINOR"):
        parse_version("ten")


def test_trt86_qdq_is_explicit_int8_with_explicit_batch():
    p = plan_build(opts(int8=True, fp16=True), QDQ_PASSED, "8.6.2")
    assert p.network_flags == ["EXPLICIT_BATCH"]  # needed for ONNX before 10.0
    assert p.builder_flags == ["INT8", "FP16"]
    assert (p.quantization, p.precision) == ("explicit", "int8-qdq+fp16")


@pytest.mark.parametrize(
    "kw,info",
    [
        ({"int8": True, "fp16": True}, QDQ_PASSED),  # explicit INT8 from `defectdet quantize`
        ({"fp16": True, "dla_core": 1}, FP32),  # FP16 on the DLA (Xavier NX / AGX Xavier have two cores)
        (
            {"int8": True, "fp16": True, "dla_core": 0, "calib_data": Path("d.yaml")},
            FP32,
        ),  # implicit INT8 on the DLA
        (
            {"fp16": True, "shape": (1, 3, 320, 320)},
            ModelInfo(opset=17, input_shape=(0, 3, 0, 0)),
        ),  # a dynamic input
    ],
)
def test_trt85_plans_and_prints_what_86_does(kw, info):
    """JetPack 5.1.x's TensorRT 8.5.2 has the 8.6 builder API and trtexec flags (sources in engine_plan.py):
    the same flags, quantization, DLA, profile and trtexec line; only the recorded version differs."""
    p85, p86 = (plan_build(opts(**kw), info, v) for v in ("8.5.2.2", "8.6.2"))
    assert p85.version == "8.5.2.2" and p85.network_flags == ["EXPLICIT_BATCH"]
    assert {**vars(p85), "version": None} == {**vars(p86), "version": None}
    assert trtexec_command(opts(**kw), p85) == trtexec_command(opts(**kw), p86)


def test_trt10_has_no_explicit_batch_flag_and_fp16_flag():
    p = plan_build(opts(fp16=True), FP32, "10.3.0")
    assert p.network_flags == [] and p.builder_flags == ["FP16"] and p.precision == "fp16"


def test_trt10_implicit_calibration_needs_data_or_cache(tmp_path):
    with pytest.raises(ConfigError, match="--calib-data"):
        plan_build(opts(int8=True), FP32, "10.3")
    p = plan_build(opts(int8=True, calib_data=tmp_path / "data.yaml"), FP32, "10.3")
    assert p.quantization == "implicit" and "INT8" in p.builder_flags
    assert any("deprecated since TensorRT 10.1" in n for n in p.notes)
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-8600-EntropyCalibration2\n")
    p = plan_build(opts(int8=True, calib_cache=cache), FP32, "8.6.2")  # a cache alone is enough
    assert p.quantization == "implicit" and not any("deprecated" in n for n in p.notes)


def test_trt11_is_strongly_typed_without_flags():
    p = plan_build(opts(int8=True), QDQ_PASSED, "11.0.0")
    assert p.network_flags == [] and p.builder_flags == [] and p.precision == "int8-qdq"
    p = plan_build(opts(fp16=True), FP16, "11.1")
    assert p.builder_flags == [] and p.precision == "fp16"


@pytest.mark.parametrize(
    "kw,info,match",
    [
        ({"int8": True, "calib_data": Path("d.yaml")}, FP32, "removed implicit INT8"),
        ({"int8": True}, FP32, "removed implicit INT8"),
        ({"fp16": True}, FP32, "export --half"),
        ({"fp16": True, "dla_core": 0}, FP16, "no DLA on Jetson .*11.4.1 restored it"),
    ],
)
def test_trt11_refuses_removed_paths(kw, info, match):
    with pytest.raises(ConfigError, match=match):
        plan_build(opts(**kw), info, "11.0")


def test_dla_on_weakly_typed_versions(tmp_path):
    p = plan_build(opts(fp16=True, dla_core=1), FP32, "10.3")
    assert p.dla_core == 1 and p.builder_flags == ["FP16", "GPU_FALLBACK"]
    with pytest.raises(ConfigError, match="FP16 or INT8 only"):
        plan_build(opts(dla_core=0), FP32, "8.6")  # the DLA has no FP32
    with pytest.raises(ConfigError, match="does not run Q/DQ"):
        plan_build(opts(int8=True, dla_core=0), QDQ_PASSED, "8.6")
    p = plan_build(opts(int8=True, dla_core=0, calib_data=tmp_path / "d.yaml"), FP32, "8.6")
    assert p.quantization == "implicit" and "GPU_FALLBACK" in p.builder_flags


def test_option_and_model_checks():
    for old in ("8.4.1.5", "8.2", "7.1.3"):  # JetPack 5.0.x ships 8.4.1, 4.6 ships 8.2.1
        with pytest.raises(
            ConfigError, match=rf"TensorRT {old}: 8.5 or newer expected \(JetPack 5.1.x ships 8.5.2"
        ):
            plan_build(opts(), FP32, old)
    for v in ("8.5.2.2", "8.6.2"):  # both parse opset <= 17 (onnx-tensorrt 8.5-GA / 8.6-GA docs/operators.md)
        with pytest.raises(ConfigError) as e:
            plan_build(opts(), ModelInfo(opset=18), v)
        assert str(e.value) == (
            f"m/model.onnx: opset 18, TensorRT {v[:3]} parses <= 17; "
            "re-export with `defectdet export --opset 17`"
        )
        assert plan_build(opts(), ModelInfo(opset=17), v).precision == "fp32"
    assert plan_build(opts(), ModelInfo(opset=18), "10.3").precision == "fp32"
    with pytest.raises(ConfigError, match="--workspace"):
        plan_build(opts(workspace_mb=0), FP32, "10.3")
    with pytest.raises(ConfigError, match="Q/DQ model carries"):
        plan_build(opts(int8=True, calib_cache=Path("c")), QDQ_PASSED, "10.3")


def test_cpu_form_int8_is_refused():
    with pytest.raises(ConfigError, match="--target tensorrt"):
        plan_build(opts(int8=True), ModelInfo(qdq=True, uint8_qdq=True, opset=17, gate="pass"), "10.3")


@pytest.mark.parametrize("gate", [None, "refused"])
def test_qdq_model_must_have_passed_the_gate(gate):
    info = ModelInfo(qdq=True, opset=17, gate=gate)
    with pytest.raises(ConfigError, match="defectdet gate"):
        plan_build(opts(int8=True), info, "10.3")
    assert plan_build(opts(int8=True, force=True), info, "10.3").quantization == "explicit"
    assert plan_build(opts(int8=True), ModelInfo(qdq=True, opset=17, gate="forced"), "10.3")


# ----------------------------------------------------------------------------- trtexec line
def test_trtexec_command_mirrors_the_plan(tmp_path):
    o = opts(
        int8=True,
        fp16=True,
        workspace_mb=2048,
        dla_core=0,
        calib_cache=tmp_path / "c.cache",
        calib_data=tmp_path / "d.yaml",
    )
    cmd = trtexec_command(o, plan_build(o, FP32, "8.6.2"))
    assert cmd[:4] == [
        "trtexec",
        "--onnx=m/model.onnx",
        "--saveEngine=m/model.engine",
        "--memPoolSize=workspace:2048",
    ]
    assert {
        "--int8",
        "--fp16",
        f"--calib={tmp_path / 'c.cache'}",
        "--useDLACore=0",
        "--allowGPUFallback",
    } <= set(cmd)
    strong = trtexec_command(opts(), plan_build(opts(), QDQ_PASSED, "11.0"))
    assert not any(c in strong for c in ("--int8", "--fp16"))  # precision comes from the ONNX on 11.x
    assert (
        trtexec_command(opts(out=Path("x.engine")), plan_build(opts(), FP32, "10.3"))[2]
        == "--saveEngine=x.engine"
    )


def test_trt1141_restored_the_dla_for_fp16_typed_models():
    for v in ("11.0", "11.3.1", "11.4.0"):
        with pytest.raises(ConfigError, match="no DLA on Jetson"):
            plan_build(opts(dla_core=0), FP16, v)
    p = plan_build(opts(dla_core=1), FP16, "11.4.1")
    assert (p.dla_core, p.builder_flags, p.precision) == (1, ["GPU_FALLBACK"], "fp16")
    assert {"--useDLACore=1", "--allowGPUFallback"} <= set(trtexec_command(opts(dla_core=1), p))
    for info in (FP32, QDQ_PASSED):
        with pytest.raises(ConfigError, match="strongly typed: it takes an FP16-typed ONNX"):
            plan_build(opts(dla_core=0), info, "11.4.1")


def test_implicit_int8_trtexec_line_reads_the_cache_the_build_writes(tmp_path):
    o = opts(int8=True, calib_data=tmp_path / "d.yaml")  # no --calib-cache: the default beside the model
    p = plan_build(o, FP32, "10.3")
    assert p.calib_cache == Path("m/model.calib.cache")
    assert "--calib=m/model.calib.cache" in trtexec_command(o, p)
    assert any("trtexec cannot calibrate from images" in n and "dummy ranges" in n for n in p.notes)
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"TRT-8600-EntropyCalibration2\n")
    p = plan_build(opts(int8=True, calib_cache=cache), FP32, "8.6")
    assert f"--calib={cache}" in trtexec_command(opts(int8=True, calib_cache=cache), p)
    assert not any("dummy ranges" in n for n in p.notes)  # the cache is there already


DYNAMIC = ModelInfo(opset=17, input_name="input", input_shape=(0, 3, 0, 0))


def test_dynamic_input_needs_a_shape_for_its_profile():
    with pytest.raises(
        ConfigError, match=r"input 'input' has dynamic dims \[0, 2, 3\] \(shape \?x3x\?x\?\); pass --shape"
    ):
        plan_build(opts(fp16=True), DYNAMIC, "10.3")
    p = plan_build(opts(fp16=True, shape=(1, 3, 320, 320)), DYNAMIC, "10.3")
    assert p.profile == ("input", (1, 3, 320, 320))
    cmd = trtexec_command(opts(fp16=True), p)
    assert {f"--{k}Shapes=input:1x3x320x320" for k in ("min", "opt", "max")} <= set(cmd)
    for bad in ((1, 4, 320, 320), (1, 3, 320), (1, 3, 0, 320)):
        with pytest.raises(ConfigError, match="--shape .*expected its rank, positive sizes"):
            plan_build(opts(shape=bad), DYNAMIC, "10.3")
    assert plan_build(opts(shape=(1, 3, 640, 640)), FP32, "10.3").profile is None  # static: nothing to add
    with pytest.raises(ConfigError, match="fixed dims unchanged"):
        plan_build(opts(shape=(1, 3, 320, 320)), FP32, "10.3")


# ----------------------------------------------------------------------------- model inspection
def _tiny_onnx(
    path: Path,
    qdq: bool = False,
    fp16: bool = False,
    opset: int = 17,
    uint8: bool = False,
    batch: int | str = 1,
) -> Path:
    """A one-conv graph (optionally with Q/DQ on the input, or FP16 weights) and its sidecar."""
    dtype, np_t = (TensorProto.FLOAT16, np.float16) if fp16 else (TensorProto.FLOAT, np.float32)
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np_t), "w")
    nodes, inits, conv_in = [], [w], "images"
    if fp16:
        nodes.append(helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16))
        conv_in = "x16"
    if qdq:
        inits += [
            numpy_helper.from_array(np.array(0.01, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.uint8 if uint8 else np.int8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        ]
        conv_in = "dq"
    nodes.append(helper.make_node("Conv", [conv_in, "w"], ["y"]))
    out_t = dtype
    if fp16:
        nodes.append(helper.make_node("Cast", ["y"], ["y32"], to=TensorProto.FLOAT))
        out_t, nodes[-1].output[0] = TensorProto.FLOAT, "out"
    else:
        nodes[-1].output[0] = "out"
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("out", out_t, [batch, 4, 8, 8])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, path)
    path.with_suffix(".json").write_text(
        json.dumps({"names": {"0": "a"}, "imgsz": [8, 8], "precision": "fp32"})
    )
    return path


def test_inspect_onnx_reads_qdq_fp16_opset_and_gate(tmp_path):
    info = inspect_onnx(_tiny_onnx(tmp_path / "a.onnx", qdq=True, opset=13))
    assert info.qdq and not info.fp16_typed and info.opset == 13 and info.input_shape == (1, 3, 8, 8)
    assert info.gate is None and not info.uint8_qdq
    assert inspect_onnx(_tiny_onnx(tmp_path / "u.onnx", qdq=True, uint8=True)).uint8_qdq
    p = _tiny_onnx(tmp_path / "b.onnx", fp16=True)
    info = inspect_onnx(p)
    assert info.fp16_typed and not info.qdq
    p.with_suffix(".json").write_text(json.dumps({"names": {"0": "a"}, "gate": {"decision": "pass"}}))
    assert inspect_onnx(p).gate == "pass"


def test_build_without_tensorrt_prints_trtexec_and_raises(tmp_path, capsys):
    if _tensorrt_importable():
        pytest.skip("tensorrt is importable here; this test covers machines without it")
    p = _tiny_onnx(tmp_path / "model.onnx")
    with pytest.raises(ExportError, match="tensorrt is not importable"):
        build_engine(EngineOptions(onnx=p, fp16=True))
    assert "trtexec --onnx=" in capsys.readouterr().out


class _FakeParserError:
    def __init__(self, i):
        self.i = i

    def desc(self):
        return f"unsupported op #{self.i}"

    def __str__(self):
        return f"In node {self.i}: unsupported op #{self.i}"


def _fake_trt(version: str, parse_ok: bool) -> SimpleNamespace:
    """Just enough of the tensorrt module's surface to drive build_engine's call sequence."""
    calls = SimpleNamespace(
        network_flags=None,
        config_flags=[],
        pool=None,
        profile=None,
        profiles=[],
        batches=0,
        replayed=None,
        scales=b"scales",
    )

    class Parser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return parse_ok

        def get_error(self, i):
            return _FakeParserError(i)

    class Profile:
        def set_shape(self, name, min, opt, max):
            calls.profile = (name, min, opt, max)

    class Config:
        def add_optimization_profile(self, profile):
            calls.profiles.append(profile)
            return len(calls.profiles) - 1

        def set_memory_pool_limit(self, pool, size):
            calls.pool = (pool, size)

        def set_flag(self, flag):
            calls.config_flags.append(flag)

    class Builder:
        num_DLA_cores = 0

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.network_flags = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            cal = getattr(config, "int8_calibrator", None)
            # as TensorRT does: the cache first (a cache is replayed, no batch is asked for), else
            # batches until None, then the cache is written
            calls.replayed = cal.read_calibration_cache() if cal is not None else None
            if calls.replayed:
                return b"PLAN"
            while cal is not None:
                try:
                    batch = cal.get_batch(["images"])
                except Exception as e:  # python/src/infer/pyInt8.cpp getBatch: printed, then "no more data"
                    print(f"[ERROR] Exception caught in get_batch(): {e}", file=sys.stderr)
                    batch = None
                if batch is None:
                    cal.write_calibration_cache(calls.scales)
                    break
                calls.batches += 1
            return b"PLAN"

    trt = SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), {"WARNING": 1, "VERBOSE": 0, "__init__": lambda s, lv: None}),
        Builder=Builder,
        OnnxParser=Parser,
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK"),
        NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0),
        IInt8EntropyCalibrator2=CALIBRATOR_BASE.IInt8EntropyCalibrator2,
    )
    return trt, calls


def test_parser_errors_are_all_logged_then_raised(tmp_path, capsys):
    trt, _ = _fake_trt("10.3.0", parse_ok=False)
    with pytest.raises(ExportError, match="2 error"):
        build_engine(EngineOptions(onnx=_tiny_onnx(tmp_path / "model.onnx")), trt=trt)
    err = capsys.readouterr().err
    assert "error 1/2" in err and "error 2/2" in err and "unsupported op #1" in err


def test_build_call_sequence_and_sidecar(tmp_path):
    trt, calls = _fake_trt("8.6.2", parse_ok=True)
    engine, plan = build_engine(
        EngineOptions(onnx=_tiny_onnx(tmp_path / "model.onnx"), fp16=True, workspace_mb=64), trt=trt
    )
    assert engine == tmp_path / "model.engine" and engine.read_bytes() == b"PLAN"
    assert calls.network_flags == 1 << 0  # EXPLICIT_BATCH on 8.6
    assert calls.config_flags == ["FP16"] and calls.pool == ("WORKSPACE", 64 << 20)
    side = json.loads((tmp_path / "model.json").read_text())
    assert side["engine"]["precision"] == "fp16" and side["engine"]["tensorrt"] == "8.6.2"
    assert side["precision"] == "fp32"  # the shared sidecar still describes model.onnx
    assert side["names"] == {"0": "a"}


def test_trt85_build_call_sequence(tmp_path):
    """build_engine against a stand-in with TensorRT 8.5.2's version: explicit batch, flags, pool, and the
    engine section records 8.5.2.2 (JetPack 5.1.x)."""
    trt, calls = _fake_trt("8.5.2.2", parse_ok=True)
    q = _tiny_onnx(tmp_path / "model.int8.onnx", qdq=True)
    q.with_suffix(".json").write_text(
        json.dumps({"names": {"0": "a"}, "precision": "int8-qdq", "gate": {"decision": "pass"}})
    )
    engine, plan = build_engine(EngineOptions(onnx=q, int8=True, fp16=True, workspace_mb=256), trt=trt)
    assert engine.read_bytes() == b"PLAN" and calls.network_flags == 1 << 0
    assert calls.config_flags == ["INT8", "FP16"] and calls.pool == ("WORKSPACE", 256 << 20)
    side = json.loads(q.with_suffix(".json").read_text())["engine"]
    assert (side["tensorrt"], side["precision"], side["quantization"]) == (
        "8.5.2.2",
        "int8-qdq+fp16",
        "explicit",
    )


def test_dynamic_onnx_builds_with_a_profile(tmp_path):
    p = _tiny_onnx(tmp_path / "model.onnx", batch="N")
    trt, calls = _fake_trt("10.3.0", parse_ok=True)
    with pytest.raises(ConfigError, match=r"input 'images' has dynamic dims \[0\]"):
        build_engine(EngineOptions(onnx=p), trt=trt)
    engine, plan = build_engine(EngineOptions(onnx=p, shape=(2, 3, 8, 8)), trt=trt)
    assert calls.profile == ("images", (2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)) and len(calls.profiles) == 1
    assert json.loads((tmp_path / "model.json").read_text())["engine"]["input_shape"] == [2, 3, 8, 8]


def test_cli_dry_run(tmp_path, capsys):
    from defectdet.cli import main

    p = _tiny_onnx(tmp_path / "model.onnx")
    assert main(["build-engine", "--model", str(p), "--fp16", "--dry-run", "--trt-version", "10.3"]) == 0
    out = capsys.readouterr().out
    assert "builder flags ['FP16']" in out and "trtexec --onnx=" in out
    assert main(["build-engine", "--model", str(p), "--int8", "--dry-run", "--trt-version", "11.0"]) == 2
    assert "removed implicit INT8" in capsys.readouterr().err
    assert (
        main(["build-engine", "--model", str(p), "--shape", "1x3x8", "--dry-run", "--trt-version", "10.3"])
        == 2
    )
    assert "--shape 1x3x8: input 'images' is 1x3x8x8" in capsys.readouterr().err
    assert (
        main(["build-engine", "--model", str(p), "--shape", "big", "--dry-run", "--trt-version", "10.3"]) == 2
    )
    assert "expected sizes joined by x" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real thing
def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_device() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not _tensorrt_importable(), reason="tensorrt is not importable (it ships with JetPack / NVIDIA's index)"
)
@pytest.mark.skipif(not _cuda_device(), reason="no CUDA device: TensorRT's builder needs a GPU")
def test_real_tensorrt_build(tmp_path):
    import tensorrt as trt

    engine, plan = build_engine(EngineOptions(onnx=_tiny_onnx(tmp_path / "model.onnx"), workspace_mb=64))
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    e = runtime.deserialize_cuda_engine(engine.read_bytes())
    names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
    assert names == ["images", "out"]


@pytest.fixture
def fake_pycuda(monkeypatch):
    """Stand-in pycuda modules for the calibrator ('device' buffer 0xD00D); returns what was copied."""
    import types

    copies = []
    driver = types.SimpleNamespace(
        mem_alloc=lambda n: 0xD00D, memcpy_htod=lambda dst, x: copies.append(x.copy())
    )
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=driver, autoinit=None))
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", types.ModuleType("pycuda.autoinit"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return copies


CALIBRATOR_BASE = SimpleNamespace(IInt8EntropyCalibrator2=type("Base", (), {"__init__": lambda self: None}))


def _calibration_data(root: Path) -> Path:
    """data.yaml over three flat 80x40 train images (0.png defect-free, 1.png and 2.png with a box)."""
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.full((40, 80, 3), 60 * i, np.uint8))
        (root / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n" if i else "")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: [scratch]\n")
    return root / "data.yaml"


def test_implicit_calibrator_feeds_images_preprocessed_as_the_model_records(tmp_path, fake_pycuda):
    """The TensorRT calibrator (export/calibration.py) against stand-in tensorrt/pycuda modules: one
    batch per image, pre-processed with the sidecar's recorded settings (here: stretch, no letterbox),
    then end of data; the cache is written atomically and replayed."""
    from defectdet.artifact import Preprocess
    from defectdet.export.calibration import load_images, tensorrt_calibrator

    data = _calibration_data(tmp_path)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    model.with_suffix(".json").write_text(
        json.dumps({"names": {"0": "scratch"}, "imgsz": [32, 32], "preprocess": {"letterbox": False}})
    )
    cache = tmp_path / "calib.cache"
    cal = tensorrt_calibrator(CALIBRATOR_BASE, model, (1, 3, 32, 32), data, 8, cache)
    assert cal.get_batch_size() == 1 and cal.read_calibration_cache() is None
    assert [cal.get_batch(["images"]) for _ in range(4)] == [[0xD00D]] * 3 + [None]
    stretched = load_images(
        sorted((tmp_path / "images").glob("*.png")), (32, 32), Preprocess(letterbox=False)
    )
    copies = fake_pycuda
    assert sorted(float(c.mean()) for c in copies) == pytest.approx(
        sorted(float(x.mean()) for x in stretched)
    )
    assert all((c == c.flat[0]).all() for c in copies)  # stretched: no grey letterbox bands
    cal.write_calibration_cache(b"scales")
    assert (
        cache.read_bytes() == b"scales" and cal.read_calibration_cache() == b"scales" and cal.failure is None
    )


@pytest.mark.parametrize("kind", ["bomb", "not-an-image"])
def test_calibrator_refuses_a_bad_image_before_calibrating(tmp_path, fake_pycuda, kind):
    """A hostile header (100000 x 100000) or a file that is no image: one DataError naming it, from the data
    tools' header check, before TensorRT gets a calibrator (nothing is copied to the device)."""
    from defectdet.errors import DataError
    from defectdet.export.calibration import tensorrt_calibrator

    data = _calibration_data(tmp_path)
    bad, why = bad_png(tmp_path / "images" / "3.png", kind)
    model = _tiny_onnx(tmp_path / "m" / "model.onnx")
    with pytest.raises(DataError) as e:
        tensorrt_calibrator(CALIBRATOR_BASE, model, (1, 3, 8, 8), data, 8, tmp_path / "c.cache")
    assert str(e.value) == f"{bad}: {why}" and fake_pycuda == []


def test_an_image_failing_mid_calibration_stops_the_build_and_writes_nothing(
    tmp_path, fake_pycuda, monkeypatch, capsys
):
    """An image whose header passes but whose data does not decode: TensorRT takes an exception from
    get_batch as the end of the data (NVIDIA/TensorRT python/src/infer/pyInt8.cpp) and would build from the
    batches before it, so the calibrator keeps the error, writes no cache, and `build-engine` exits 2 with
    it (one line naming the file) before writing an engine or sidecar entry."""
    from defectdet.cli import main

    data = _calibration_data(tmp_path / "d")
    model = _tiny_onnx(tmp_path / "m" / "model.onnx")
    trt, calls = _fake_trt("8.5.2.2", parse_ok=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    argv = ["build-engine", "--model", str(model), "--int8", "--fp16", "--calib-data", str(data)]
    assert (
        main(argv + ["--calib-cache", str(tmp_path / "good.cache"), "--out", str(tmp_path / "good.engine")])
        == 0
    )
    assert calls.batches == 3 and (tmp_path / "good.cache").read_bytes() == b"scales"  # the fake calibrates
    capsys.readouterr()
    bad, why = bad_png(tmp_path / "d" / "images" / "3.png", "undecodable")
    out, cache = tmp_path / "bad.engine", tmp_path / "bad.cache"
    assert main(argv + ["--calib-cache", str(cache), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == f"defectdet build-engine: error: {bad}: {why}"
    assert (
        "Traceback" not in err
        and not out.exists()
        and not cache.exists()
        and not out.with_suffix(".json").exists()
    )


def test_a_calibration_cache_is_bound_to_its_model(tmp_path, fake_pycuda, monkeypatch, capsys):
    """TensorRT replays a cache before asking for batches: a cache from another model (retrained,
    other pre-processing, shape or TensorRT) is recalibrated with --calib-data and refused without;
    this model's own cache is replayed; the engine's sidecar names the cache and its hash."""
    from defectdet.artifact import sha256_file
    from defectdet.cli import main
    from defectdet.export.calib_cache import record_path

    data = _calibration_data(tmp_path / "d")
    model = _tiny_onnx(tmp_path / "m" / "model.onnx")
    cache = tmp_path / "m" / "model.calib.cache"
    trt, calls = _fake_trt("8.5.2.2", parse_ok=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    base = ["build-engine", "--model", str(model), "--int8", "--calib-cache", str(cache)]
    assert main(base + ["--calib-data", str(data)]) == 0 and calls.batches == 3
    record = json.loads(record_path(cache).read_text())
    assert record["onnx_sha256"] == sha256_file(model) and record["tensorrt"] == "8.5.2.2"
    assert record["input_shape"] == [1, 3, 8, 8] and record["cache_sha256"] == sha256_file(cache)
    side = json.loads(model.with_suffix(".json").read_text())["engine"]["calibration_cache"]
    assert side["sha256"] == sha256_file(cache) and side["replayed"] is False

    calls.batches = 0  # the same model again, without images: its own cache is replayed
    assert main(base) == 0 and calls.batches == 0 and calls.replayed == b"scales"
    assert (
        json.loads(model.with_suffix(".json").read_text())["engine"]["calibration_cache"]["replayed"] is True
    )

    retrained = onnx.load(str(model))  # new weights: another model file, the old cache stays beside it
    retrained.graph.initializer[0].raw_data = bytes(len(retrained.graph.initializer[0].raw_data))
    onnx.save(retrained, str(model))
    capsys.readouterr()
    assert main(base) == 2  # no --calib-data: refused, not replayed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cache) in err[0] and "another model" in err[0] and "--calib-data" in err[0]
    calls.scales = b"new scales"
    assert main(base + ["--calib-data", str(data)]) == 0
    assert calls.batches == 3 and not calls.replayed and cache.read_bytes() == b"new scales"
    assert json.loads(record_path(cache).read_text())["onnx_sha256"] == sha256_file(model)
    assert "recalibrating on --calib-data" in capsys.readouterr().out

    record_path(cache).unlink()  # a cache of unknown origin (an older defectdet, trtexec) is not trusted
    assert main(base) == 2 and "no readable record" in capsys.readouterr().err
    trt.__version__ = "10.3.0"
    assert main(base + ["--calib-data", str(data)]) == 0
    assert json.loads(record_path(cache).read_text())["tensorrt"] == "10.3.0"
    trt.__version__ = "8.6.2"
    assert main(base) == 2 and "TensorRT 10.3.0 (this is 8.6.2)" in capsys.readouterr().err


def test_build_engine_keeps_the_cause_of_a_tensorrt_that_fails_to_load(tmp_path, monkeypatch):
    from defectdet.export.tensorrt import import_tensorrt

    pkg = tmp_path / "fake" / "tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise OSError('libnvinfer.so.10: cannot open shared object file')\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    with pytest.raises(
        ExportError, match=r"tensorrt failed to import \(OSError: libnvinfer.so.10: cannot open"
    ):
        import_tensorrt()
