"""The accuracy gate's decision, tested with evaluation reports shaped like defectdet.evaluate's
EvalReport (map50, map50_95, escape_rate, per_class[name]["recall"]; fractions). The gate on real
FP32 / INT8 models lives in test_export_trained.py (slow)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from modelfiles import tiny_onnx

from defectdet.errors import ConfigError
from defectdet.export import GateRefused
from defectdet.export.gate import Limits, compare, run_gate


def report(
    map50=0.80,
    map50_95=0.50,
    escape=0.02,
    recalls=None,
    labels=None,
    thresholds=None,
    aps=None,
    overkill=0.10,
    calibration=None,
):
    recalls = recalls or {"scratch": 0.90, "crack": 0.70}
    labels, aps = labels or {}, aps or {}
    per_class = {
        n: {"recall": r, "ap50": aps.get(n, 0.8), "labels": labels.get(n, 10)} for n, r in recalls.items()
    }
    return SimpleNamespace(
        map50=map50,
        map50_95=map50_95,
        escape_rate=escape,
        overkill_rate=overkill,
        per_class=per_class,
        calibration=calibration,
        escapes=2,
        overkills=10,
        n_defective=100,
        n_clean=100,
        model="model.int8.onnx",
        data="d.yaml",
        split="val",
        escape_rule="box",
        thresholds=thresholds or {n: 0.3 for n in recalls},
        to_dict=lambda: {"map50": map50, "pr_curves": {"x": [1]}, "escape_rate": escape},
    )


def test_identical_reports_pass():
    r = compare(report(), report())
    assert r.passed and r.decision == "pass" and not r.reasons
    assert {c.metric for c in r.checks} == {
        "mAP50",
        "mAP50-95",
        "recall[scratch]",
        "recall[crack]",
        "escape_rate",
    }


def test_map50_drop_in_points_against_max_drop():
    # 0.800 -> 0.790 is exactly 1.0 point: at the limit, accepted; 0.789 is 1.1 points: refused
    assert compare(report(map50=0.800), report(map50=0.790)).passed
    r = compare(report(map50=0.800), report(map50=0.789))
    assert not r.passed and r.reasons == ["mAP50 dropped 1.10 points (limit 1.00)"]
    assert compare(report(map50=0.800), report(map50=0.789), Limits(max_drop=1.5)).passed


def test_map50_95_is_reported_not_gated():
    r = compare(report(map50_95=0.50), report(map50_95=0.30))
    assert r.passed
    c = next(c for c in r.checks if c.metric == "mAP50-95")
    assert c.limit is None and c.loss == pytest.approx(20.0)


def test_one_class_recall_drop_refuses_even_when_map_holds():
    # a rare class can vanish under INT8 while the mean barely moves: per-class recall catches it
    r = compare(report(), report(recalls={"scratch": 0.90, "crack": 0.67}))
    assert not r.passed and len(r.reasons) == 1 and r.reasons[0].startswith("recall[crack] dropped 3.00")
    assert compare(
        report(), report(recalls={"scratch": 0.90, "crack": 0.67}), Limits(max_class_drop=3.0)
    ).passed


def test_class_missing_from_int8_report_counts_as_zero_recall():
    r = compare(report(), report(recalls={"scratch": 0.90}))
    assert not r.passed and "recall[crack] dropped 70.00" in r.reasons[0]


def test_class_without_val_labels_is_skipped():
    fp32 = report(recalls={"scratch": 0.9, "dent": 0.0}, labels={"dent": 0})
    r = compare(fp32, report(recalls={"scratch": 0.9, "dent": 0.0}))
    assert "recall[dent]" not in {c.metric for c in r.checks}


def test_escape_rate_rise_refuses_and_improvement_passes():
    r = compare(report(escape=0.02), report(escape=0.05))
    assert not r.passed and r.reasons == ["escape_rate rose 3.00 points (limit 1.00)"]
    assert compare(report(escape=0.05), report(escape=0.02)).passed  # INT8 escaping less is no loss


def test_missing_escape_rate_and_vacuous_model_warn():
    a, b = report(map50=0.01), report(map50=0.01)
    a.escape_rate = None
    r = compare(a, b)
    assert r.passed and any("escape rate not measured" in w for w in r.warnings)
    assert any("detects almost nothing" in w for w in r.warnings)


def test_limits_reject_negative_or_nan():
    with pytest.raises(ConfigError, match="max-drop"):
        Limits(max_drop=-1)
    with pytest.raises(ConfigError, match="max-class-drop"):
        Limits(max_class_drop=float("nan"))


# ------------------------------------------------------------------------- run_gate with a stand-in evaluator
class FakeEvaluator:
    """Returns a fixed report per model file and records the thresholds each model was evaluated at."""

    def __init__(self, fp32, int8):
        self.reports = {"model.onnx": fp32, "model.int8.onnx": int8}
        self.thresholds = {}

    def __call__(self, model, data, thresholds=None, **kw):
        name = model.rsplit("/", 1)[-1]
        self.thresholds[name] = thresholds
        self.kw = kw
        return self.reports[name]


@pytest.fixture
def models(tmp_path):
    (tmp_path / "model.onnx").write_bytes(tiny_onnx())  # the gate reads both files before evaluating
    (tmp_path / "model.int8.onnx").write_bytes(tiny_onnx())
    (tmp_path / "model.int8.json").write_text(
        json.dumps({"names": {"0": "scratch", "1": "crack"}, "precision": "int8-qdq"})
    )
    return tmp_path


def test_run_gate_pass_writes_report_and_sidecar(models):
    ev = FakeEvaluator(report(), report(map50=0.795))
    r = run_gate(models / "model.onnx", models / "model.int8.onnx", "data.yaml", evaluator=ev)
    assert r.decision == "pass"
    assert ev.thresholds == {
        "model.onnx": None,
        "model.int8.onnx": None,
    }  # no deployed thresholds: own max-F1
    doc = json.loads((models / "model.int8.gate.json").read_text())
    assert doc["decision"] == "pass" and "pr_curves" not in doc["fp32"]
    side = json.loads((models / "model.int8.json").read_text())
    assert side["gate"]["decision"] == "pass" and side["precision"] == "int8-qdq"  # merged, not replaced


def test_run_gate_refuses_then_force_accepts(models):
    ev = FakeEvaluator(report(map50=0.80), report(map50=0.70))
    with pytest.raises(GateRefused, match=r"mAP50 dropped 10.00 points.*--force"):
        run_gate(models / "model.onnx", models / "model.int8.onnx", "data.yaml", evaluator=ev)
    assert json.loads((models / "model.int8.json").read_text())["gate"]["decision"] == "refused"
    r = run_gate(models / "model.onnx", models / "model.int8.onnx", "data.yaml", force=True, evaluator=ev)
    assert r.decision == "forced" and r.reasons
    assert json.loads((models / "model.int8.gate.json").read_text())["decision"] == "forced"


def test_deployed_thresholds_from_the_fp32_sidecar_apply_to_both(models):
    (models / "model.json").write_text(
        json.dumps({"names": {"0": "scratch", "1": "crack"}, "thresholds": {"0": 0.4, "crack": 0.2}})
    )
    ev = FakeEvaluator(report(), report())
    run_gate(models / "model.onnx", models / "model.int8.onnx", "d.yaml", evaluator=ev)
    assert ev.thresholds["model.onnx"] == ev.thresholds["model.int8.onnx"] == {"scratch": 0.4, "crack": 0.2}
    assert json.loads((models / "model.int8.gate.json").read_text())["thresholds"] == "model.json"


def test_user_thresholds_apply_to_both_models(models):
    ev = FakeEvaluator(report(), report())
    run_gate(models / "model.onnx", models / "model.int8.onnx", "d.yaml", thresholds="th.yaml", evaluator=ev)
    assert ev.thresholds == {"model.onnx": "th.yaml", "model.int8.onnx": "th.yaml"}


def test_cli_gate_refusal_exits_nonzero_with_one_line(models, monkeypatch, capsys):
    from defectdet.cli import main
    from defectdet.export import gate

    monkeypatch.setattr(gate, "_default_evaluator", lambda: FakeEvaluator(report(), report(escape=0.10)))
    rc = main(
        [
            "gate",
            "--fp32",
            str(models / "model.onnx"),
            "--int8",
            str(models / "model.int8.onnx"),
            "--data",
            "d.yaml",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "escape_rate rose 8.00 points" in err[0]
    assert (
        main(
            [
                "gate",
                "--fp32",
                str(models / "model.onnx"),
                "--int8",
                str(models / "model.int8.onnx"),
                "--data",
                "d.yaml",
                "--max-escape-rise",
                "10",
            ]
        )
        == 0
    )


def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model not found"):
        run_gate(
            tmp_path / "nope.onnx", tmp_path / "nope.int8.onnx", "d.yaml", evaluator=lambda *a, **k: None
        )


# ----------------------------------------------------------------------------- recalibrated gate
def test_recalibrated_compare_gates_ap50_and_overkill_not_recall():
    fp32 = report(recalls={"scratch": 0.90, "crack": 0.70}, overkill=0.20)
    shifted = report(
        recalls={"scratch": 0.80, "crack": 0.60}, overkill=0.21
    )  # recall at another operating point
    assert not compare(fp32, shifted).passed  # at shared thresholds a 10-point recall drop refuses
    r = compare(fp32, shifted, recalibrated=True)
    assert r.passed and {c.metric for c in r.checks} == {
        "mAP50",
        "mAP50-95",
        "AP50[scratch]",
        "AP50[crack]",
        "escape_rate",
        "overkill_rate",
    }
    r = compare(fp32, report(overkill=0.23, aps={"crack": 0.75}), recalibrated=True)
    assert r.reasons == [
        "AP50[crack] dropped 5.00 points (limit 2.00)",
        "overkill_rate rose 3.00 points (limit 2.00)",
    ]
    assert compare(fp32, report(overkill=0.23), Limits(max_overkill_rise=3.5), recalibrated=True).passed


def test_recalibrated_gate_calibrates_each_model_and_deploys_int8_thresholds(models, capsys):
    import yaml

    (models / "model.json").write_text(json.dumps({"names": {"0": "scratch"}, "thresholds": {"0": 0.4}}))
    ev = FakeEvaluator(
        report(thresholds={"scratch": 0.35, "crack": 0.2}),
        report(
            thresholds={"scratch": 0.31, "crack": 0.17},
            overkill=0.11,
            calibration={"target_escape": 0.01, "reachable": True},
        ),
    )
    r = run_gate(models / "model.onnx", models / "model.int8.onnx", "d.yaml", evaluator=ev, recalibrate=0.01)
    assert r.decision == "pass" and ev.kw["target_escape"] == 0.01
    assert ev.thresholds == {
        "model.onnx": None,
        "model.int8.onnx": None,
    }  # own calibration, not the sidecar's
    own = yaml.safe_load((models / "model.int8.thresholds.yaml").read_text())
    assert own["thresholds"] == {"scratch": 0.31, "crack": 0.17} and own["target_escape"] == 0.01
    assert own["achieved"] == {
        "escape_rate": 0.02,
        "overkill_rate": 0.11,
        "escapes": 2,
        "overkills": 10,
        "n_defective": 100,
        "n_clean": 100,
    }
    assert own["reachable"] is True and own["model"] == "model.int8.onnx"  # as `defectdet val` writes it
    side = json.loads((models / "model.int8.json").read_text())
    assert side["thresholds"] == own["thresholds"] and side["gate"]["decision"] == "pass"
    assert "model.int8.thresholds.yaml (also in its sidecar)" in capsys.readouterr().out
    from defectdet.artifact import load_thresholds

    assert load_thresholds(models / "model.int8.thresholds.yaml", {0: "scratch", 1: "crack"}) == {
        0: 0.31,
        1: 0.17,
    }


def test_recalibrated_gate_under_the_line_rule_passes_it_to_the_evaluator(models):
    ev = FakeEvaluator(report(), report())
    run_gate(
        models / "model.onnx",
        models / "model.int8.onnx",
        "d.yaml",
        evaluator=ev,
        recalibrate=0.05,
        escape_rule="any",
    )
    assert ev.kw["escape_rule"] == "any" and ev.kw["target_escape"] == 0.05


def test_recalibrated_gate_at_an_overkill_target_sets_one_part_threshold(models, capsys):
    from defectdet.part_rule import OperatingTarget

    ev = FakeEvaluator(report(), report())
    target = OperatingTarget(overkill=0.05, confidence=0.9)
    run_gate(models / "model.onnx", models / "model.int8.onnx", "d.yaml", evaluator=ev, recalibrate=target)
    assert ev.kw["target_overkill"] == 0.05 and ev.kw["confidence"] == 0.9
    assert ev.kw["threshold_rule"] == "part" and "target_escape" not in ev.kw
    assert "calibrated on val for overkill <= 0.05 of good parts (90% confidence)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "over, conf, escape, match",
    [
        (0.05, None, 0.01, "--recalibrate 0.01 and --recalibrate-overkill 0.05: expected one of them"),
        (None, 0.9, None, "--recalibrate-confidence 0.9: expected together with --recalibrate-overkill"),
    ],
)
def test_gate_recalibration_options_conflict_in_one_line(models, over, conf, escape, match, capsys):
    from defectdet.cli import main

    argv = ["gate", "--fp32", str(models / "model.onnx"), "--int8", str(models / "model.int8.onnx")]
    argv += ["--data", "d.yaml"] + (["--recalibrate", str(escape)] if escape is not None else [])
    argv += (["--recalibrate-overkill", str(over)] if over is not None else []) + (
        ["--recalibrate-confidence", str(conf)] if conf is not None else []
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"recalibrate": 1.5}, "expected a target escape rate in"),
        ({"recalibrate": 0.01, "thresholds": "th.yaml"}, "exclude each other"),
        ({"escape_rule": "strict"}, "--escape-rule strict: expected one of box, any"),
    ],
)
def test_recalibrate_bad_arguments(models, kw, match):
    with pytest.raises(ConfigError, match=match):
        run_gate(
            models / "model.onnx",
            models / "model.int8.onnx",
            "d.yaml",
            evaluator=FakeEvaluator(report(), report()),
            **kw,
        )


def test_cli_recalibrate_and_overkill_limit(models, monkeypatch, capsys):
    from defectdet.cli import main
    from defectdet.export import gate

    monkeypatch.setattr(gate, "_default_evaluator", lambda: FakeEvaluator(report(), report(overkill=0.13)))
    argv = [
        "gate",
        "--fp32",
        str(models / "model.onnx"),
        "--int8",
        str(models / "model.int8.onnx"),
        "--data",
        "d.yaml",
        "--recalibrate",
        "0.02",
    ]
    assert main(argv) == 2 and "overkill_rate rose 3.00 points (limit 2.00)" in capsys.readouterr().err
    assert main([*argv, "--max-overkill-rise", "3.5"]) == 0
    assert (models / "model.int8.thresholds.yaml").is_file()


# ----------------------------------------------------------------------------- bootstrap: is a loss real?
def test_a_loss_over_the_limit_is_refused_only_when_its_interval_is_above_zero():
    fp32, int8 = report(map50=0.80), report(map50=0.76)  # 4 points over a 1-point limit
    noisy = compare(fp32, int8, intervals={"mAP50": (-1.5, 9.0)})
    assert noisy.decision == "pass" and any("includes no loss: not refused" in w for w in noisy.warnings)
    real = compare(fp32, int8, intervals={"mAP50": (0.5, 9.0)})
    assert real.decision == "refused" and "interval 0.5 to 9.0" in real.reasons[0]
    assert compare(fp32, int8).decision == "refused"  # no interval measured: the point estimate decides
    assert "0.5..9.0" in real.table()
    with pytest.raises(ConfigError, match="gate-confidence=0.3"):
        Limits(confidence=0.3)


def _images(n, found_every=1, seed=0):
    """n images, each with one 'scratch' defect; a detection on it in every ``found_every``-th image."""
    from defectdet.metrics import ImageDetections

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hit = i % found_every == 0
        out.append(
            ImageDetections(
                boxes=[[10, 10, 50, 50]] if hit else np.zeros((0, 4)),
                conf=[0.5 + 0.4 * rng.random()] if hit else [],
                cls=[0] if hit else [],
                gt_boxes=[[10, 10, 50, 50]],
                gt_cls=[0],
                name=f"img{i}.png",
            )
        )
    return out


def test_paired_intervals_see_a_real_loss_and_no_loss_between_equal_models():
    from defectdet.export.gate_bootstrap import paired_intervals

    names = ["scratch", "crack"]
    mk = lambda dets: SimpleNamespace(detections=dets, thresholds={"scratch": 0.3, "crack": 0.3})  # noqa: E731
    same = paired_intervals(mk(_images(40)), mk(_images(40)), names, n_boot=200)
    assert same["mAP50"] == (0.0, 0.0) and same["recall[scratch]"] == (0.0, 0.0)
    worse = paired_intervals(mk(_images(40)), mk(_images(40, found_every=2)), names, n_boot=200)
    assert worse["recall[scratch]"][0] > 30  # half the defects lost: ~50 points, never near zero
    assert worse["escape_rate"][0] > 30 and "recall[crack]" not in worse  # no crack labels: not measured
    assert paired_intervals(mk(_images(40)), mk(_images(39)), names) == {}  # not the same images


def test_run_gate_records_the_bootstrap_intervals(models):
    fp32, int8 = report(map50=0.80), report(map50=0.80)
    fp32.detections, int8.detections = _images(30), _images(30)
    r = run_gate(
        models / "model.onnx", models / "model.int8.onnx", "data.yaml", evaluator=FakeEvaluator(fp32, int8)
    )
    doc = json.loads((models / "model.int8.gate.json").read_text())
    assert r.decision == "pass" and doc["bootstrap"]["level"] == 0.9
    assert doc["bootstrap"]["intervals"]["mAP50"] == [0.0, 0.0]
    r0 = run_gate(
        models / "model.onnx",
        models / "model.int8.onnx",
        "data.yaml",
        Limits(confidence=0),
        evaluator=FakeEvaluator(fp32, int8),
    )
    assert all(c.interval is None for c in r0.checks)


def test_quantize_checks_the_gate_recalibration_before_quantizing(tmp_path, capsys):
    from defectdet.cli import main

    argv = ["quantize", "--model", str(tmp_path / "absent.onnx"), "--data", "d.yaml"]
    assert main([*argv, "--recalibrate", "0.01", "--recalibrate-overkill", "0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--recalibrate 0.01 and --recalibrate-overkill 0.05: expected one of them" in err
    assert len(err.splitlines()) == 1  # the absent model is not reached: nothing was quantized
