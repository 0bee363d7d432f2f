"""Export -> INT8 -> gate on a model that has learned something (slow: trains yolo11n for ~1 min).

A yolo11n learns bright squares and discs on dark noise (96 px) to mAP50 ~0.98; then:

* the INT8 Q/DQ model's outputs stay within 2 % (relative L2) of FP32 on real images, boxes and
  score logits alike. Why 2 %: symmetric 8-bit activations quantize each tensor with a step of
  max|x|/127, an RMS error of ~0.2 % of its range per layer; through ~80 quantized convs this was
  measured at 0.25-0.35 % here (~0.5 % on a 3M-parameter net at 640). 2 % leaves a
  5x margin for other CPUs' kernels and stays 5x below what a broken calibration gives (~10 %);
* the gate accepts that model and refuses one calibrated on a single blank image.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
from test_export_quantize import make_shapes_dataset  # noqa: E402  (the shapes generator, shared)

from defectdet.export import GateRefused  # noqa: E402

pytestmark = pytest.mark.slow
IMGSZ = 96
TOLERANCE = 0.02  # relative L2, see the module docstring


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data.yaml, FP32 model.onnx, sound INT8, damaged INT8)."""
    import cv2
    import numpy as np

    from defectdet.export.onnx import export_onnx
    from defectdet.export.quantize import quantize_onnx
    from defectdet.offline import setup_ultralytics

    root = tmp_path_factory.mktemp("trained")
    data = make_shapes_dataset(root / "data", n_train=48, n_val=40, size=IMGSZ, defect_every=2)
    setup_ultralytics()
    from ultralytics import YOLO

    y = YOLO("yolo11n.yaml")
    y.train(
        data=str(data),
        epochs=40,
        imgsz=IMGSZ,
        batch=16,
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        val=False,
        mosaic=0.0,
        close_mosaic=0,
        warmup_epochs=1,
        optimizer="AdamW",
        lr0=0.004,
        seed=0,
        deterministic=True,
        project=str(root / "runs"),
        name="shapes",
        exist_ok=True,
        verbose=False,
    )
    ckpt = root / "runs" / "shapes" / "weights" / "last.pt"
    fp32 = export_onnx(ckpt, imgsz=IMGSZ, out=root / "model" / "model.onnx").onnx
    sound = quantize_onnx(fp32, data, calib_images=32, show_progress=False).onnx
    blank = root / "blank"
    (blank / "images" / "train").mkdir(parents=True)
    (blank / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(blank / "images" / "train" / "blank.png"), np.full((IMGSZ, IMGSZ, 3), 114, np.uint8))
    (blank / "labels" / "train" / "blank.txt").write_text("")
    shutil.copytree(blank / "images" / "train", blank / "images" / "val")
    (blank / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: square\n  1: disc\n")
    damaged = quantize_onnx(
        fp32,
        blank / "data.yaml",
        calib_images=1,
        show_progress=False,
        out=root / "model" / "damaged.int8.onnx",
    ).onnx
    return data, fp32, sound, damaged


def test_fp32_model_learned(trained):
    from defectdet.evaluate import evaluate

    data, fp32, _, _ = trained
    assert evaluate(str(fp32), data).map50 > 0.8  # else the gate below would compare nothing


def test_int8_outputs_close_to_fp32(trained):
    from defectdet.export.calibration import load_images, split_images
    from defectdet.export.quantize import output_error

    data, fp32, sound, damaged = trained
    side = json.loads(sound.with_suffix(".json").read_text())
    calib_err = side["quantization"]["output_error"]  # measured by quantize on calibration images
    assert calib_err["boxes_rel_l2"] < TOLERANCE and calib_err["logits_rel_l2"] < TOLERANCE
    x = load_images(split_images(data, "val"), (IMGSZ, IMGSZ))  # held-out images
    ok = output_error(fp32, sound, x)
    bad = output_error(fp32, damaged, x)
    assert ok["boxes_rel_l2"] < TOLERANCE and ok["logits_rel_l2"] < TOLERANCE, ok
    assert bad["boxes_rel_l2"] > TOLERANCE or bad["logits_rel_l2"] > TOLERANCE, bad  # the check can fail


def test_gate_accepts_sound_int8(trained):
    from defectdet.export.gate import run_gate

    data, fp32, sound, _ = trained
    r = run_gate(fp32, sound, data)
    assert r.decision == "pass"
    assert json.loads(sound.with_suffix(".json").read_text())["gate"]["decision"] == "pass"


def test_gate_refuses_int8_calibrated_on_one_blank_image(trained):
    from defectdet.export.gate import run_gate

    data, fp32, _, damaged = trained
    with pytest.raises(GateRefused, match="mAP50 dropped"):
        run_gate(fp32, damaged, data)
    assert json.loads(damaged.with_name("damaged.int8.gate.json").read_text())["decision"] == "refused"


def test_cpu_form_passes_the_gate(trained, tmp_path):
    from defectdet.export.gate import run_gate
    from defectdet.export.quantize import quantize_onnx

    data, fp32, _, _ = trained
    q = quantize_onnx(
        fp32,
        data,
        calib_images=32,
        method="minmax",
        target="cpu",
        out=tmp_path / "m.cpu.onnx",
        show_progress=False,
    )
    assert run_gate(fp32, q.onnx, data).decision == "pass"


def test_cli_quantize_runs_the_gate(trained, tmp_path):
    from defectdet.cli import main

    data, fp32, _, _ = trained
    out = tmp_path / "cli.int8.onnx"
    assert (
        main(
            [
                "quantize",
                "--model",
                str(fp32),
                "--data",
                str(data),
                "--calib-images",
                "16",
                "--method",
                "minmax",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.with_suffix(".json").read_text())["gate"]["decision"] == "pass"
