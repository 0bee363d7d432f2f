"""``defectdet quantize``: the Q/DQ structure TensorRT builds from, the head kept in float, calibration
images enriched in defects, and a model onnxruntime runs. Output closeness and the gate on a
model that has learned something are in test_export_trained.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_hostile import bad_png  # hostile / unreadable image files and their one-line messages

from defectdet.errors import ConfigError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

IMGSZ = 64


def make_shapes_dataset(
    root: Path, n_train: int = 12, n_val: int = 4, size: int = 96, seed: int = 0, defect_every: int = 2
) -> Path:
    """Bright squares (class 0) and discs (class 1) on dark noise; every ``defect_every``-th image
    has shapes, the rest are clean parts with empty label files."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(20, 60, (size, size, 3), dtype=np.uint8)
            rows = []
            if i % defect_every == 0:
                for _ in range(int(rng.integers(1, 3))):
                    c, s = int(rng.integers(0, 2)), int(rng.integers(size // 5, size // 3))
                    x, y = (int(v) for v in rng.integers(0, size - s, 2))
                    if c == 0:
                        cv2.rectangle(img, (x, y), (x + s, y + s), (230, 230, 230), -1)
                    else:
                        cv2.circle(img, (x + s // 2, y + s // 2), s // 2, (60, 200, 250), -1)
                    rows.append(
                        f"{c} {(x + s / 2) / size:.5f} {(y + s / 2) / size:.5f} {s / size:.5f} {s / size:.5f}"
                    )
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), img)
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(rows))
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: square\n  1: disc\n")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """An exported untrained 2-class yolo11n and its INT8 Q/DQ model calibrated on 8 images."""
    from defectdet.export.onnx import export_onnx
    from defectdet.export.quantize import quantize_onnx
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    root = tmp_path_factory.mktemp("q")
    data = make_shapes_dataset(root / "data")
    torch.manual_seed(0)
    y = YOLO("yolo11n.yaml")
    y.model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    y.model.names = {0: "square", 1: "disc"}
    y.save(str(root / "best.pt"))
    fp32 = export_onnx(root / "best.pt", imgsz=IMGSZ, check_parity=False).onnx
    return fp32, quantize_onnx(fp32, data, calib_images=8, method="minmax", show_progress=False), data


def _producers(m):
    return {o: n for n in m.graph.node for o in n.output}


def test_qdq_on_every_conv_except_the_reported_float_ones(quantized):
    fp32, r, _ = quantized
    m = onnx.load(str(r.onnx))
    prod = _producers(m)
    kept = set(r.report["kept_float"])
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in onnx.load(str(fp32)).graph.node)
    for n in convs:
        has_qdq = all(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input[:2])
        assert has_qdq == (n.name not in kept), n.name
    assert set(r.report["float_convs"]) == kept and r.report["quantized_convs"] == len(convs) - len(kept)


def test_kept_float_is_the_detection_head_output(quantized):
    """yolo11 has 3 levels: 3 class-logit convs, 3 box-distribution convs and the DFL integral."""
    fp32, r, _ = quantized
    m = onnx.load(str(fp32))
    inits = {i.name: i for i in m.graph.initializer}
    kept = [n for n in m.graph.node if n.name in set(r.report["kept_float"])]
    assert len(kept) == 7
    out_ch = sorted(inits[n.input[1]].dims[0] for n in kept)  # output channels of each kept conv
    assert out_ch == [1] + [2] * 3 + [64] * 3  # DFL (1), class logits (nc=2), 4 x reg_max(16) box bins


def test_a_body_conv_kept_float_leaves_the_convs_after_it_quantized(quantized, tmp_path):
    """--keep-float with the stem's names keeps those convs float, not everything they feed: the
    decoding after the head stays float, but after a body conv only its activation does."""
    from defectdet.export.quantize import head_output_convs, quantize_onnx

    fp32, _, data = quantized
    m = onnx.load(str(fp32))
    convs = [n.name for n in m.graph.node if n.op_type == "Conv"]
    stem = convs[:2]
    names = ",".join(head_output_convs(m) + stem)
    r = quantize_onnx(fp32, data, 8, "minmax", tmp_path / "stem.onnx", keep_float=names, show_progress=False)
    assert sorted(r.report["float_convs"]) == sorted(r.report["kept_float"]) and set(stem) <= set(
        r.report["float_convs"]
    )
    assert r.report["quantized_convs"] == len(convs) - len(r.report["kept_float"]) > 0


def test_tensorrt_form_symmetric_int8_and_opset_kept(quantized):
    _, r, _ = quantized
    m = onnx.load(str(r.onnx))
    inits = {i.name: i for i in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for n in qs:
        zp = onnx.numpy_helper.to_array(inits[n.input[2]])
        assert zp.dtype == np.int8 and not zp.any()  # symmetric: every zero-point is 0
    convs = {n.name: n for n in m.graph.node if n.op_type == "Conv"}
    consumers = {i for n in m.graph.node for i in n.input if n.op_type == "QuantizeLinear"}
    assert not consumers & {o for c in convs.values() for o in c.output}  # conv outputs stay float
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert r.report["opset"] == 17


def test_int8_model_runs_in_onnxruntime_with_metadata(quantized):
    from defectdet.artifact import load_metadata

    fp32, r, _ = quantized
    sess = ort.InferenceSession(str(r.onnx), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"images": np.full((1, 3, IMGSZ, IMGSZ), 0.5, np.float32)})[0]
    assert y.shape == (1, 6, sum((IMGSZ // s) ** 2 for s in (8, 16, 32))) and np.isfinite(y).all()
    side = json.loads(r.sidecar.read_text())
    assert side["precision"] == "int8-qdq" and side["quantization"]["calib_images"] == 8
    assert side["source_onnx"]["path"] == str(fp32.resolve())
    meta = load_metadata(r.onnx)
    assert meta.names == {0: "square", 1: "disc"} and meta.imgsz == (IMGSZ, IMGSZ)
    props = {p.key: p.value for p in onnx.load(str(r.onnx)).metadata_props}
    assert json.loads(props["defectdet"])["precision"] == "int8-qdq" and "names" in props


def test_cpu_form_is_uint8_and_keeps_the_head_decoding_float(quantized, tmp_path):
    """onnxruntime's CPU form quantizes every op of the body, but not the head's decoding: boxes
    (pixels) and scores (0..1) meet in one tensor there, and one 8-bit scale would erase the scores."""
    from defectdet.export.quantize import downstream, quantize_onnx

    fp32, r, data = quantized
    q = quantize_onnx(
        fp32,
        data,
        calib_images=4,
        method="minmax",
        target="cpu",
        out=tmp_path / "m.cpu.onnx",
        show_progress=False,
    )
    m = onnx.load(str(q.onnx))
    inits = {i.name: i for i in m.graph.initializer}
    zps = [
        onnx.numpy_helper.to_array(inits[n.input[2]]) for n in m.graph.node if n.op_type == "QuantizeLinear"
    ]
    assert zps and all(z.dtype == np.uint8 for z in zps)
    prod = _producers(m)
    kept = set(q.report["kept_float"])
    tail = set(downstream(onnx.load(str(fp32)), q.report["kept_float"]))
    assert q.report["float_head_tail"] == len(tail) > 0

    def dq(name):
        return prod.get(name) is not None and prod[name].op_type == "DequantizeLinear"

    for n in m.graph.node:
        if n.name in kept:
            assert not dq(n.input[1]), n.name  # float weights (its input may arrive dequantized)
        if n.name in tail:
            assert not any(dq(i) for i in n.input), n.name
    assert json.loads(q.sidecar.read_text())["precision"] == "int8-qdq-cpu"


def test_calibration_set_is_enriched_in_defects(tmp_path):
    from defectdet.export.calibration import is_defective, select_calibration, split_images

    data = make_shapes_dataset(tmp_path, n_train=20, n_val=1, defect_every=10)  # 2 of 20 defective

    images = split_images(data, "train")
    assert sum(map(is_defective, images)) == 2
    paths, n_bad = select_calibration(images, 8)
    assert len(paths) == 8 and n_bad == 2 == sum(map(is_defective, paths))  # all the defects there are
    rich = make_shapes_dataset(tmp_path / "rich", n_train=20, n_val=1, defect_every=2)  # 10 of 20
    paths, n_bad = select_calibration(split_images(rich, "train"), 8)
    assert n_bad == 4 == sum(map(is_defective, paths))  # half, not the natural share
    assert len(select_calibration(images, 500)[0]) == 20  # capped at what exists
    assert select_calibration(images, 8, seed=1)[0] != select_calibration(images, 8, seed=2)[0]


def test_calibration_images_match_the_runtime_preprocessing(quantized):
    from defectdet.export.calibration import load_images, split_images
    from defectdet.runtime.preprocess import Preprocessor

    _, _, data = quantized
    p = split_images(data, "train")[0]
    x = load_images([p], (IMGSZ, IMGSZ))  # (1, 3, H, W)
    ref = Preprocessor((IMGSZ, IMGSZ))([cv2.imread(str(p))])[0]
    assert x.shape == (1, 3, IMGSZ, IMGSZ) and np.array_equal(x, ref)


def test_refusals(quantized, tmp_path):
    from defectdet.export.quantize import quantize_onnx, resolve_keep_float

    fp32, r, data = quantized
    with pytest.raises(ConfigError, match="already has Q/DQ"):
        quantize_onnx(r.onnx, data, calib_images=2, show_progress=False)
    with pytest.raises(ConfigError, match="--method"):
        quantize_onnx(fp32, data, method="kl", show_progress=False)
    with pytest.raises(ConfigError, match="no node named"):
        resolve_keep_float(onnx.load(str(fp32)), "nope/Conv")
    assert resolve_keep_float(onnx.load(str(fp32)), "none") == []
    with pytest.raises(ConfigError, match="model not found"):
        quantize_onnx(tmp_path / "missing.onnx", data, show_progress=False)


@pytest.mark.parametrize("kind", ["bomb", "not-an-image", "undecodable"])
def test_a_bad_calibration_image_is_one_line_naming_it_and_writes_nothing(quantized, tmp_path, capsys, kind):
    """A hostile header or an unreadable file among the calibration images: `defectdet quantize` exits 2 with
    one line naming the file (not PIL's DecompressionBombError or OpenCV's size assertion), no model, no
    sidecar, no staging folder. The first two are caught before calibration starts; the undecodable one (its
    header passes) by the calibration reader, whose error onnxruntime's quantize_static lets through."""
    from defectdet.cli import main

    fp32, _, _ = quantized
    data = make_shapes_dataset(tmp_path / "d", n_train=3, n_val=1)
    bad, why = bad_png(
        tmp_path / "d" / "images" / "train" / "zz.png", kind
    )  # no label file: a defect-free part
    out = tmp_path / "out" / "m.int8.onnx"
    rc = main(
        [
            "quantize",
            "--model",
            str(fp32),
            "--data",
            str(data),
            "--calib-images",
            "50",
            "--method",
            "minmax",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == f"defectdet quantize: error: {bad}: {why}"
    if kind != "undecodable":  # refused before any work, so before the progress bar: the only line
        assert err.strip().splitlines() == [f"defectdet quantize: error: {bad}: {why}"]
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no .quantize-* staging left


@pytest.fixture(scope="module")
def quantized_uint8(quantized):
    """One checkpoint exported with ``--input uint8`` (NHWC), and its INT8 Q/DQ model on the same 8 images."""
    from defectdet.export.onnx import export_onnx
    from defectdet.export.quantize import quantize_onnx

    fp32, _, data = quantized
    u8 = export_onnx(
        fp32.parent / "best.pt", imgsz=IMGSZ, out=fp32.parent / "u8" / "model.onnx", input_dtype="uint8"
    ).onnx
    return u8, quantize_onnx(u8, data, calib_images=8, method="minmax", show_progress=False)


def test_uint8_model_quantizes_with_the_same_scales(quantized, quantized_uint8):
    """Calibration feeds the uint8 model bytes; the first conv sees the same floats: the same scales."""
    _, r, _ = quantized
    u8, r8 = quantized_uint8
    m = onnx.load(str(r8.onnx))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, IMGSZ, IMGSZ, 3]
    assert m.graph.node[0].op_type == "Cast" and {
        o.version for o in m.opset_import if o.domain in ("", "ai.onnx")
    } == {17}

    def scales(path):  # quantized tensor -> its scale(s); the uint8 graph's first conv reads the Div's output
        g = onnx.load(str(path)).graph
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        rename = {"defectdet_input/normalised": "images"}
        return {
            rename.get(n.input[0], n.input[0]): inits[n.input[1]].tolist()
            for n in g.node
            if n.op_type == "QuantizeLinear"
        }

    assert scales(r8.onnx) == scales(r.onnx) and r8.report["quantized_convs"] == r.report["quantized_convs"]
    side = json.loads(r8.sidecar.read_text())
    assert (
        side["preprocess"]["dtype"] == "uint8"
        and side["preprocess"]["layout"] == "NHWC"
        and not side["preprocess"]["rgb"]
    )
    assert side["imgsz"] == [IMGSZ, IMGSZ] and side["precision"] == "int8-qdq"
    assert r8.report["output_error"]["boxes_rel_l2"] == pytest.approx(
        r.report["output_error"]["boxes_rel_l2"], rel=1e-3
    )


def test_val_and_gate_accept_uint8_models(quantized, quantized_uint8):
    """``val`` on the uint8 FP32 and INT8 models reports as on their float twins; the gate runs on them."""
    from defectdet.evaluate import evaluate
    from defectdet.export.gate import run_gate

    fp32, r, data = quantized
    u8, r8 = quantized_uint8
    for float_model, uint8_model in ((fp32, u8), (r.onnx, r8.onnx)):
        a, b = evaluate(str(float_model), data).to_dict(), evaluate(str(uint8_model), data).to_dict()
        assert b["imgsz"] == [IMGSZ, IMGSZ]
        assert (b["map50"], b["map50_95"], b["escape_rate"], b["overkill_rate"]) == (
            a["map50"],
            a["map50_95"],
            a["escape_rate"],
            a["overkill_rate"],
        )
    g = run_gate(u8, r8.onnx, data, force=True)
    assert g.report_path == r8.onnx.with_suffix(".gate.json") and g.report_path.is_file()
    assert "gate" in json.loads(r8.sidecar.read_text())


def test_sensitivity_is_the_sqnr_of_each_convs_quantized_input(tmp_path):
    """One Conv whose input passes Q/DQ at a known scale: the ranking's dB value is
    10*log10(sum x^2 / sum (x - round(x/s)*s)^2) over the images, computed here by hand."""
    from onnx import TensorProto, helper, numpy_helper

    from defectdet.export.quantize import sensitive_convs

    s = 0.05
    inits = [
        numpy_helper.from_array(np.array(s, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq"),
        helper.make_node("Conv", ["xdq", "w"], ["y"], name="the_conv"),
        helper.make_node("Conv", ["x", "w"], ["y2"], name="float_conv"),  # no Q/DQ: not ranked
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 4, 4]) for n in ("y", "y2")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).normal(0, 0.3, (3, 1, 4, 4)).astype(np.float32)
    xq = np.clip(np.round(x / s), -128, 127) * s
    want = 10 * np.log10(np.square(x.astype(np.float64)).sum() / np.square(x - xq).sum())
    rank = sensitive_convs(path, x, "x")
    assert [c for c, _ in rank] == ["the_conv"]
    assert rank[0][1] == pytest.approx(want, abs=0.01)
    assert not (tmp_path / "m.sensitivity.onnx").exists()  # the debug model is removed


def test_float_sensitive_keeps_the_noisiest_convs_float_too(quantized, tmp_path, capsys):
    """--float-sensitive 3: the head's convs and the 3 body convs with the lowest input SQNR on the
    calibration images stay float; the rest are quantized; the report names them with their dB."""
    from defectdet.export.quantize import head_output_convs, quantize_onnx

    fp32, base, data = quantized
    head = head_output_convs(onnx.load(str(fp32)))
    r = quantize_onnx(fp32, data, 8, "minmax", tmp_path / "s3.onnx", float_sensitive=3, show_progress=False)
    sens = r.report["sensitive"]
    assert len(sens) == 3 and [d["sqnr_db"] for d in sens] == sorted(d["sqnr_db"] for d in sens)
    names = [d["conv"] for d in sens]
    assert r.report["kept_float"] == head + names and not set(names) & set(head)
    assert set(names) <= set(r.report["float_convs"])
    assert not set(names) & set(base.report["float_convs"])  # quantized without --float-sensitive
    assert r.report["quantized_convs"] == base.report["quantized_convs"] - 3
    assert f"float: {len(head)} convs (auto) + the 3 with the noisiest input" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--float-sensitive -1: expected a whole number >= 0"):
        quantize_onnx(fp32, data, 8, "minmax", tmp_path / "bad.onnx", float_sensitive=-1, show_progress=False)
