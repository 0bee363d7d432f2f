"""bench/demo_table.py: the docs' demo table (docs/demo.md) from the run's summary.yaml and gate report."""

from __future__ import annotations

import json

import benchscripts
import pytest

from defectdet.config import dump_yaml
from defectdet.errors import ConfigError

T = benchscripts.load("demo_table")


def _summary(gate="pass", gate_report=None):
    return {
        "seconds": 166.0,
        "val_imgsz": 320,
        "steps": {
            "1. synthetic data": 4.6,
            "2. train defectdet-pico from scratch": 145.4,
            "3. validate": 4.9,
        },
        "settings": {
            "images": 520,
            "epochs": 30,
            "imgsz": 160,
            "paste": 0.5,
            "target_escape": 0.05,
            "calib_images": 64,
            "quant_method": "minmax",
        },
        "train": {
            "cls_loss": "focal",
            "gamma": 1.0,
            "cls": 4.0,
            "sampling": "defect",
            "crop": "native",
            "optimizer": "AdamW",
            "lr0": 0.003,
            "nbs": 16,
            "threads": 2,
        },
        "per_class": {"scratch": {"ap50": 0.513, "labels": 9}, "spot": {"ap50": 0.944, "labels": 13}},
        "map50": 0.6478,
        "map50_95": 0.3744,
        "escape_rate": 1 / 31,
        "overkill_rate": 3 / 177,
        "escapes": 1,
        "overkills": 3,
        "n_defective": 31,
        "n_clean": 177,
        "parity": {"boxes_max_abs": 0.000488, "scores_max_abs": 2.1e-6},
        "gate": gate,
        "gate_report": gate_report,
        "inspect": {
            "frames": 240,
            "fps": 194.5,
            "events_written": 19,
            "defective_parts": 1,
            "good_parts": 9,
            "caught": 1,
            "false_rejects": 0,
        },
    }


GATE = {
    "checks": [
        {"metric": "mAP50", "fp32": 0.6478, "int8": 0.6349, "loss": 1.29},
        {"metric": "AP50[scratch]", "fp32": 0.513, "int8": 0.468, "loss": 4.55},
        {"metric": "AP50[spot]", "fp32": 0.944, "int8": 0.978, "loss": -3.36},
        {"metric": "escape_rate", "fp32": 1 / 31, "int8": 1 / 31, "loss": 0.0},
        {"metric": "overkill_rate", "fp32": 3 / 177, "int8": 4 / 177, "loss": 0.56},
    ],
    "reasons": ["mAP50 dropped 1.29 points (limit 1.00)", "AP50[scratch] dropped 4.55 points (limit 2.00)"],
}


def test_table_states_what_the_run_measured():
    text = T.table(_summary(gate="refused"), GATE)
    rows = text.splitlines()
    assert rows[:2] == ["| step | result |", "|---|---|"] and len(rows) == 8
    assert "30 epochs, 312 parts, 160 px native-scale windows, paste 0.5" in rows[2]  # 520 - (31 + 177) parts
    assert (
        "sampling=defect, focal γ=1 cls=4, AdamW lr0 0.003, a step every 16 images, 2 threads" in rows[2]
        and "145 s; mAP50 0.648, mAP50-95 0.374 on 208 val parts" in rows[2]
    )
    assert "(AP50: spot 0.94, scratch 0.51; 9–13 labels per class)" in rows[2]
    assert "escape **3.2%** (1 of 31 defective parts), overkill **1.7%** (3 of 177 good parts)" in rows[3]
    assert "0.00049 px (boxes), 2e-06 (scores)" in rows[4]
    assert "64 calibration images, minmax)" in rows[5] and "**refused**: mAP50 0.635 vs 0.648" in rows[5]
    assert (
        "overkill 2.3% vs 1.7%" in rows[5]
        and "per-class AP50 change -4.5 to +3.4 points (worst scratch)" in rows[5]
    )
    assert "refused for: mAP50 dropped 1.29 points" in rows[5] and "deploys the FP32" in rows[5]
    assert (
        "1 of 1 defective parts rejected, 0 of 9 good parts rejected" in rows[6]
        and rows[7] == "| total | 166 s |"
    )


def test_a_passed_gate_says_so_without_reasons():
    better = [
        {**c, "loss": -abs(c["loss"])} if c["metric"].startswith("AP50[") else c for c in GATE["checks"]
    ]
    better[1]["loss"] = 0.0  # scratch unchanged, spot +3.4: no class lost AP
    cell = T.table(_summary(), {"checks": better, "reasons": []}).splitlines()[5]
    assert "**passed**: mAP50" in cell and "refused" not in cell and "FP32" not in cell
    assert (
        "per-class AP50 change +0.0 to +3.4 points |" in cell + " |"
    )  # no "-0.0", no "worst" when none lost


def test_a_summary_from_an_older_demo_is_a_clear_error():
    s = _summary()
    del s["settings"], s["parity"]
    with pytest.raises(
        ConfigError, match=r"summary.yaml: missing settings, parity; expected the file `defectdet demo`"
    ):
        T.table(s, None)


def test_main_rewrites_the_pages_block(tmp_path, capsys):
    gate = tmp_path / "model.int8.gate.json"
    gate.write_text(json.dumps(GATE))
    dump_yaml(tmp_path / "summary.yaml", _summary(gate="refused", gate_report=str(gate)))
    readme = tmp_path / "demo.md"
    readme.write_text("intro\n<!-- demo-table:start -->\nSTALE ROW\n<!-- demo-table:end -->\nafter\n")
    assert T.main(["--run", str(tmp_path), "--page", str(readme)]) == 0
    doc = readme.read_text()
    assert "STALE ROW" not in doc and doc.startswith("intro\n<!-- demo-table:start -->\n| step | result |")
    assert doc.endswith("| total | 166 s |\n<!-- demo-table:end -->\nafter\n") and "refused for" in doc


def test_missing_run_or_unreadable_gate_report_exit_2_with_one_line(tmp_path, capsys):
    assert T.main(["--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope/summary.yaml: not found" in err
    dump_yaml(tmp_path / "summary.yaml", _summary(gate_report=str(tmp_path / "gone.json")))
    assert T.main(["--run", str(tmp_path)]) == 2
    assert "gone.json: cannot read the INT8 gate report" in capsys.readouterr().err


def test_the_convs_kept_float_are_named_in_the_int8_row():
    summary = _summary(gate="refused")
    summary["settings"]["float_sensitive"] = 4
    row = T.table(summary, GATE).splitlines()[5]
    assert "64 calibration images, minmax, the 4 convs with the noisiest input in float)" in row
