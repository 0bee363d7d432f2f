"""The demo: its training run lands under --out as documented (runs/demo/train), not under ultralytics'
runs/detect/ prefix for a relative project (the demo passes an absolute project path); bad values are one-line
errors."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from defectdet import demo


class Stop(Exception):
    pass


def test_demo_trains_into_an_absolute_project_under_out(tmp_path, monkeypatch):
    seen = {}

    def fake_train(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "defectdet.train", types.SimpleNamespace(train=fake_train))
    monkeypatch.setattr("defectdet.data.synthetic.make_dataset", lambda out, **kw: Path(out) / "data.yaml")
    with pytest.raises(Stop):
        demo.run_demo(
            Path("runs/demo"),
            images=4,
            epochs=1,
            imgsz=32,
            cls_loss="focal",
            seed=0,
            batch=2,
            defect_rate=0.5,
            defect_scale=1.0,
            target_escape=0.05,
        )
    assert Path(seen["project"]) == tmp_path / "runs" / "demo" and Path(seen["project"]).is_absolute()
    assert seen["name"] == "train" and seen["exist_ok"] is True
    assert (seen["cls_loss"], seen["gamma"], seen["alpha"], seen["cls"]) == (
        "focal",
        2.0,
        0.25,
        4.0,
    )  # the preset
    assert demo.loss_settings("auto") == {"cls_loss": "auto"}
    assert demo.loss_settings("focal_mild") == {"cls_loss": "focal", "gamma": 1.0, "alpha": 0.5, "cls": 4.0}
    assert demo.DEMO["defect_rate"] <= 0.15 and demo.DEMO["defect_scale"] <= 1.5  # a rare set, small defects


@pytest.mark.parametrize(
    "args, message",
    [
        (["--part-px", "-5"], "--part-px=-5: expected an integer >= 32 (pixels)"),
        (["--defect-rate", "1.5"], "--defect-rate=1.5: expected a number in [0, 1]"),
        (["--images", "1"], "--images=1: expected an integer >= 2"),
        (["--epochs", "0"], "--epochs=0: expected an integer >= 1"),
        (["--val-fraction", "1"], "--val-fraction=1.0: expected a number in (0, 1)"),
    ],
)
def test_bad_demo_values_are_one_line_errors_before_any_work(args, message, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "defectdet.cli", "demo", "--out", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


def test_quantize_step_uses_the_demo_calibration_and_falls_back_to_fp32_when_refused(tmp_path, monkeypatch):
    from defectdet.export import GateRefused

    seen = {}

    def fake_quantize(onnx, data, **kw):
        seen.update(kw)
        return types.SimpleNamespace(onnx=tmp_path / "model.int8.onnx")

    def refuse(*a, **kw):
        seen["gate"] = kw
        raise GateRefused("model.int8.onnx refused: AP50[scratch] dropped 4.55 points (limit 2.00)")

    monkeypatch.setattr("defectdet.export.quantize.quantize_onnx", fake_quantize)
    monkeypatch.setattr("defectdet.export.gate.run_gate", refuse)
    onnx = tmp_path / "model.onnx"
    assert demo._quantize_and_gate(onnx, tmp_path / "data.yaml", 0.05, 64, "minmax") == (
        onnx,
        "refused",
        tmp_path / "model.int8.gate.json",
    )  # the report run_gate wrote beside the INT8 model
    assert (seen["calib_images"], seen["method"], seen["target"]) == (64, "minmax", "tensorrt")
    assert seen["gate"] == {
        "recalibrate": 0.05,
        "escape_rule": "any",
    }  # each model at its own thresholds, line rule


def test_summary_yaml_has_what_the_demo_table_needs(tmp_path, monkeypatch):
    """run_demo with every heavy step faked: summary.yaml is written (plain YAML) and bench/demo_table.py
    turns it into the docs table (docs/demo.md), so a real demo run's numbers reach the docs untyped."""
    import json

    import benchscripts

    from defectdet.config import dump_yaml, load_yaml

    data = tmp_path / "data" / "data.yaml"

    def fake_dataset(out, **kw):
        data.parent.mkdir(parents=True)
        return data

    def fake_train(**kw):
        assert kw["threads"] is None  # --threads 0 (the default): every core, as `defectdet train` decides
        run = Path(kw["project"]) / kw["name"]
        (run / "weights").mkdir(parents=True)
        dump_yaml(
            run / "defectdet.yaml",
            {
                "cls_loss": "focal",
                "gamma": 1.0,
                "cls": 4.0,
                "data": str(data),
                "sampling": "defect",
                "crop": "native",
                "eval_imgsz": 64,
                "optimizer": "AdamW",
                "lr0": 0.003,
                "nbs": 2,
                "threads": 2,
            },
        )
        return run

    report = types.SimpleNamespace(
        map50=0.6,
        map50_95=0.3,
        escape_rate=0.0,
        overkill_rate=0.5,
        escapes=0,
        overkills=1,
        n_defective=1,
        n_clean=2,
        per_class={"scratch": {"ap50": 0.6, "labels": 2}},
        save=lambda out: None,
        summary=lambda: "",
    )
    gate = tmp_path / "model.int8.gate.json"
    gate.write_text(
        json.dumps({"checks": [{"metric": "mAP50", "fp32": 0.6, "int8": 0.6, "loss": 0.0}], "reasons": []})
    )
    monkeypatch.setitem(sys.modules, "defectdet.train", types.SimpleNamespace(train=fake_train))
    monkeypatch.setattr("defectdet.data.synthetic.make_dataset", fake_dataset)
    monkeypatch.setattr("defectdet.evaluate.evaluate", lambda *a, **kw: report)
    monkeypatch.setattr("defectdet.evaluate.write_thresholds", lambda r, p: p)
    monkeypatch.setattr(
        demo,
        "_export",
        lambda best, size, thr: (tmp_path / "model.onnx", {"boxes_max_abs": 1e-4, "scores_max_abs": 1e-6}),
    )
    monkeypatch.setattr(demo, "_quantize_and_gate", lambda *a: (tmp_path / "model.int8.onnx", "pass", gate))
    monkeypatch.setattr(demo, "_bundle", lambda *a: (tmp_path / "out" / "model.bundle", "ab" * 32))
    monkeypatch.setattr(
        demo,
        "_inspect",
        lambda *a: {
            "frames": 24,
            "fps": 50.0,
            "events_written": 2,
            "defective_parts": 1,
            "good_parts": 1,
            "caught": 1,
            "false_rejects": 0,
            "ng_while_moving_in_or_out": 1,
        },
    )
    demo.run_demo(
        tmp_path / "out",
        images=5,
        epochs=1,
        imgsz=32,
        cls_loss="focal_mild",
        seed=0,
        batch=2,
        defect_rate=0.2,
        defect_scale=1.0,
        target_escape=0.05,
        calib_images=8,
        quant_method="minmax",
    )
    summary = load_yaml(tmp_path / "out" / "summary.yaml")
    assert summary["settings"]["quant_method"] == "minmax" and summary["train"]["nbs"] == 2
    assert summary["bundle_id"] == "ab" * 32 and summary["bundle"].endswith("model.bundle")
    text = benchscripts.load("demo_table").table(summary, json.loads(gate.read_text()))
    assert "1 epochs, 2 parts, 32 px native-scale windows" in text and "8 calibration images, minmax" in text
    assert "**passed**: mAP50 0.600 vs 0.600" in text and "1 of 1 defective parts rejected" in text


@pytest.mark.parametrize("decision", ["pass", "refused"])
def test_the_demo_bundles_what_its_steps_wrote(tmp_path, decision):
    """demo._bundle over the files the demo's steps leave (weights/model*.onnx + sidecars, the gate's report
    and INT8 thresholds, val/, the run's settings): the INT8 model goes in only when it passed the gate."""
    import json

    from defectdet.artifact.bundle import open_bundle

    run, out = tmp_path / "out" / "train", tmp_path / "out"
    w = run / "weights"
    w.mkdir(parents=True)
    (out / "val").mkdir()
    for name in ("model.onnx", "model.int8.onnx"):
        (w / name).write_bytes(name.encode())
    for name in ("model.json", "model.int8.json"):
        (w / name).write_text(json.dumps({"names": {"0": "scratch"}, "thresholds": {"scratch": 0.3}}))
    (w / "model.int8.thresholds.yaml").write_text("thresholds: {scratch: 0.31}\n")
    (w / "model.int8.gate.json").write_text(
        json.dumps(
            {
                "decision": decision,
                "reasons": [] if decision == "pass" else ["mAP50 dropped 3.00 points (limit 1.00)"],
            }
        )
    )
    (out / "val" / "val_report.json").write_text("{}")
    (out / "val" / "pr_curves.png").write_bytes(b"png")
    (out / "val" / "thresholds.yaml").write_text("thresholds: {scratch: 0.3}\n")
    (run / "defectdet.yaml").write_text("cls_loss: focal\n")
    path, bundle_id = demo._bundle(
        out, w / "model.onnx", w / "model.int8.gate.json", out / "val" / "thresholds.yaml", run, 0.05
    )
    b = open_bundle(path)
    assert path == out / "model.bundle" and b.id == bundle_id
    assert {
        "fp32/model.onnx",
        "thresholds/fp32.yaml",
        "reports/val/pr_curves.png",
        "reports/gate.json",
        "run/defectdet.yaml",
    } <= set(b.members())
    assert ("int8/model.int8.onnx" in b.members()) == (decision == "pass")
    assert (
        b.deployed == ("int8" if decision == "pass" else "fp32")
        and b.manifest["gate"]["decision"] == decision
    )
