"""``defectdet export``: a valid static ONNX, ORT == PyTorch within tolerance, metadata that round-trips
into the runtime's reader, and files written without clobbering the user's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from defectdet.errors import ConfigError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

NAMES = {0: "scratch", 1: "crack"}
IMGSZ = 96


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained yolo11n with 2 classes saved the way ultralytics saves checkpoints."""
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    y = YOLO("yolo11n.yaml")
    y.model = DetectionModel("yolo11n.yaml", nc=len(NAMES), verbose=False)
    y.model.names = dict(NAMES)
    path.parent.mkdir(parents=True, exist_ok=True)
    y.save(str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """run/weights/best.pt + run/defectdet.yaml -> run/weights/model.onnx (+ model.json)."""
    from defectdet.export.onnx import export_onnx

    run = tmp_path_factory.mktemp("run")
    ckpt = make_checkpoint(run / "weights" / "best.pt")
    (run / "defectdet.yaml").write_text("cls_loss: qfl\ngamma: 1.5\nalpha: null\n")
    (run / "weights" / "best.onnx").write_bytes(b"the user's own file")
    return ckpt, export_onnx(ckpt, imgsz=IMGSZ)


def test_onnx_is_valid_static_and_opset_17(exported):
    ckpt, r = exported
    assert r.onnx == ckpt.parent / "model.onnx" and r.sidecar == ckpt.parent / "model.json"
    onnx.checker.check_model(str(r.onnx))
    m = onnx.load(str(r.onnx))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert m.graph.input[0].name == "images" and dims == [1, 3, IMGSZ, IMGSZ]  # static
    anchors = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [1, 4 + len(NAMES), anchors]
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {
        17
    }  # TensorRT 8.6 parses <= 17


def test_users_best_onnx_is_not_overwritten(exported):
    ckpt, _ = exported
    assert (ckpt.parent / "best.onnx").read_bytes() == b"the user's own file"
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_metadata_embedded_and_in_sidecar(exported):
    ckpt, r = exported
    props = {p.key: p.value for p in onnx.load(str(r.onnx)).metadata_props}
    assert {"names", "imgsz", "stride", "task", "batch"} <= set(props)  # ultralytics' own keys stay
    assert props["task"] == "detect" and props["strides"] == "[8, 16, 32]"
    dd = json.loads(props["defectdet"])
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert dd["cls_loss"] == "qfl" and dd["gamma"] == 1.5 and dd["source"]["sha256"] == sha
    side = json.loads(r.sidecar.read_text())
    assert side["names"] == {"0": "scratch", "1": "crack"} and side["imgsz"] == [IMGSZ, IMGSZ]
    assert side["strides"] == [8, 16, 32] and side["input_name"] == "images"
    assert side["preprocess"] == {
        "letterbox": True,
        "rgb": True,
        "scale": 1 / 255,
        "pad_value": 114,
        "dtype": "float32",
        "layout": "NCHW",
    }
    assert side["output_layout"] == "xywh+cls (1, 4+nc, A)" and side["precision"] == "fp32"
    assert side["cls_loss"] == "qfl" and side["source"] == {"checkpoint": str(ckpt.resolve()), "sha256": sha}


def test_metadata_round_trips_into_the_runtime_reader(exported):
    from defectdet.artifact import load_metadata

    _, r = exported
    meta = load_metadata(r.onnx)
    assert meta.names == NAMES and meta.imgsz == (IMGSZ, IMGSZ) and meta.strides == (8, 16, 32)
    assert meta.cls_loss == "qfl" and meta.input_name == "images" and not meta.end2end
    out_anchors = json.loads(r.sidecar.read_text())["output_shape"][2]
    assert meta.anchors() == out_anchors
    r.sidecar.rename(r.sidecar.with_suffix(".bak"))  # without the sidecar, the embedded props still suffice
    try:
        props = {p.key: p.value for p in onnx.load(str(r.onnx)).metadata_props}
        meta2 = load_metadata(r.onnx, embedded=props)
        assert meta2.names == NAMES and meta2.imgsz == (IMGSZ, IMGSZ) and meta2.strides == (8, 16, 32)
    finally:
        r.sidecar.with_suffix(".bak").rename(r.sidecar)


def test_onnxruntime_matches_pytorch(exported):
    """ORT vs the PyTorch checkpoint on an input with image-like structure (not the export's own
    parity input). FP32 graphs differ only by operation order: 1e-3 px on boxes, 1e-5 on scores."""
    from ultralytics import YOLO

    ckpt, r = exported
    yy, xx = np.mgrid[0:IMGSZ, 0:IMGSZ] / IMGSZ
    x = np.stack([yy, xx, (yy * xx) ** 0.5])[None].astype(np.float32)  # (1, 3, H, W) gradients
    x[:, :, 30:60, 20:50] = 0.9  # a bright square
    sess = ort.InferenceSession(str(r.onnx), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {"images": x})[0]  # (1, 6, A)
    with torch.no_grad():
        y_pt = YOLO(str(ckpt)).model.float().eval()(torch.from_numpy(x))[0].numpy()  # (1, 6, A)
    assert y_ort.shape == y_pt.shape
    assert np.abs(y_ort[:, :4] - y_pt[:, :4]).max() < 1e-2  # box pixels
    assert np.abs(y_ort[:, 4:] - y_pt[:, 4:]).max() < 1e-4  # scores
    assert r.parity["ok"] and r.parity["boxes_max_abs"] < 1e-2 and r.parity["scores_max_abs"] < 1e-4


def test_half_export_is_fp16_typed_with_fp32_io(exported, tmp_path):
    from defectdet.export.onnx import export_onnx

    ckpt, _ = exported
    r = export_onnx(ckpt, imgsz=IMGSZ, half=True, out=tmp_path / "model.fp16.onnx")
    m = onnx.load(str(r.onnx))
    onnx.checker.check_model(m)  # also proves the nodes are topologically sorted (TensorRT needs that)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert r.metadata["precision"] == "fp16" and r.parity["ok"]
    assert json.loads((tmp_path / "model.fp16.json").read_text())["precision"] == "fp16"


@pytest.fixture(scope="module")
def exported_uint8(exported, tmp_path_factory):
    """The same checkpoint through ``defectdet export --input uint8`` (NHWC, the default layout)."""
    from defectdet import cli as dd_cli

    ckpt, _ = exported
    out = tmp_path_factory.mktemp("u8") / "model.onnx"
    assert (
        dd_cli.main(
            ["export", "--model", str(ckpt), "--imgsz", str(IMGSZ), "--input", "uint8", "--out", str(out)]
        )
        == 0
    )
    return out


def test_uint8_export_takes_the_bgr_frame_and_normalises_in_the_graph(exported, exported_uint8):
    _, r = exported
    m = onnx.load(str(exported_uint8))
    onnx.checker.check_model(m)
    inp = m.graph.input[0]
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, IMGSZ, IMGSZ, 3]
    assert [n.op_type for n in m.graph.node[:4]] == [
        "Cast",
        "Transpose",
        "Gather",
        "Div",
    ]  # Cast first: TensorRT's UINT8 rule
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {17}
    side = json.loads(exported_uint8.with_suffix(".json").read_text())
    assert side["preprocess"] == {
        "letterbox": True,
        "rgb": False,
        "scale": 1 / 255,
        "pad_value": 114,
        "dtype": "uint8",
        "layout": "NHWC",
    }
    assert side["imgsz"] == [IMGSZ, IMGSZ] and side["input_shape"] == [1, IMGSZ, IMGSZ, 3]
    assert (
        side["parity"]["ok"] and side["parity"]["boxes_max_abs"] < 1e-2
    )  # against PyTorch on the normalised bytes
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["defectdet"])["preprocess"]["dtype"] == "uint8"
    # the same bytes give the float export's outputs
    u = np.random.default_rng(1).integers(0, 256, (1, IMGSZ, IMGSZ, 3), dtype=np.uint8)
    x = np.ascontiguousarray(u.transpose(0, 3, 1, 2)[:, ::-1]).astype(np.float32) / np.float32(255)
    y8 = ort.InferenceSession(str(exported_uint8), providers=["CPUExecutionProvider"]).run(
        None, {"images": u}
    )[0]
    y = ort.InferenceSession(str(r.onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(y8, y, atol=1e-4, rtol=0)


def test_float_view_of_a_uint8_export_is_the_float_graph(exported, exported_uint8):
    from defectdet.export.uint8 import float_view, is_uint8_input, uint8_input

    _, r = exported
    fp, u8 = onnx.load(str(r.onnx)), onnx.load(str(exported_uint8))
    view = float_view(u8)
    assert is_uint8_input(u8) and not is_uint8_input(view) and not is_uint8_input(fp)
    assert view.graph.input == fp.graph.input and list(view.graph.node) == list(fp.graph.node)
    assert uint8_input(onnx.load(str(r.onnx)), "NCHW")["layout"] == "NCHW"
    with pytest.raises(Exception, match="expected a static \\(B, 3, H, W\\) float32"):
        uint8_input(u8)


def test_sidecars_without_dtype_and_layout_read_as_float32_nchw(exported, exported_uint8, tmp_path):
    """A sidecar without the input dtype (older exports) loads; one that disagrees with the graph doesn't."""
    import shutil

    from defectdet.runtime import Detector, MetadataError, load_metadata

    _, r = exported
    side = json.loads(r.sidecar.read_text())
    for name, model in (("old", r.onnx), ("lying", exported_uint8)):
        shutil.copy(model, tmp_path / f"{name}.onnx")
        old = {
            **side,
            "preprocess": {k: side["preprocess"][k] for k in ("letterbox", "rgb", "scale", "pad_value")},
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(old))
    pre = load_metadata(tmp_path / "old.onnx").preprocess
    assert (pre.dtype, pre.layout) == ("float32", "NCHW")
    with Detector(tmp_path / "old.onnx") as det:
        assert det.backend.input_spec().dtype == np.float32
    with pytest.raises(MetadataError, match="imgsz|dtype"):
        Detector(tmp_path / "lying.onnx")
    (tmp_path / "bad.onnx").write_bytes(r.onnx.read_bytes())
    (tmp_path / "bad.json").write_text(
        json.dumps({**side, "preprocess": {**side["preprocess"], "dtype": "int4"}})
    )
    with pytest.raises(MetadataError, match="preprocess.dtype"):
        load_metadata(tmp_path / "bad.onnx")


def test_run_info_without_run_file(tmp_path):
    from defectdet.artifact import RunInfo

    (tmp_path / "weights").mkdir()
    assert RunInfo.find(tmp_path / "weights" / "best.pt") is None  # the card then says cls_loss unknown
    (tmp_path / "defectdet.yaml").write_text("cls_loss: focal\ngamma: 2.0\nalpha: 0.25\n")
    run = RunInfo.find(tmp_path / "weights" / "best.pt")
    assert (run.cls_loss, run.gamma, run.alpha) == ("focal", 2.0, 0.25)
    assert run.recipe is None and run.deploy_imgsz is None


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    from defectdet.cli import main
    from defectdet.export.onnx import export_onnx

    with pytest.raises(ConfigError, match="checkpoint not found"):
        export_onnx(tmp_path / "missing.pt")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="expected an ultralytics .pt"):
        export_onnx(tmp_path / "model.onnx")
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="--opset 5"):
        export_onnx(tmp_path / "best.pt", opset=5)
    assert main(["export", "--model", str(tmp_path / "missing.pt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
