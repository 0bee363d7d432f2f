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
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {17}  # TensorRT 8.6 parses <= 17


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
    assert side["preprocess"] == {"letterbox": True, "rgb": True, "scale": 1 / 255, "pad_value": 114}
    assert side["output_layout"] == "xywh+cls (1, 4+nc, A)" and side["precision"] == "fp32"
    assert side["cls_loss"] == "qfl" and side["source"] == {"checkpoint": str(ckpt.resolve()), "sha256": sha}


def test_metadata_round_trips_into_the_runtime_reader(exported):
    from defectdet.runtime.metadata import load_metadata

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


def test_training_info_without_run_file(tmp_path):
    from defectdet.export.onnx import training_info

    (tmp_path / "weights").mkdir()
    assert training_info(tmp_path / "weights" / "best.pt")["cls_loss"] == "unknown"
    (tmp_path / "defectdet.yaml").write_text("cls_loss: focal\ngamma: 2.0\nalpha: 0.25\n")
    assert training_info(tmp_path / "weights" / "best.pt") == {"cls_loss": "focal", "gamma": 2.0, "alpha": 0.25}


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
