"""bench/curve.py: the budget x capacity curve runs bench/quality.py's recipe arm per (model, epochs)
cell, cheapest first, resumes from its cache, and tabulates every finished cell."""

import json

import pytest

from bench import curve as C
from defectdet.errors import ConfigError


def test_cells_run_cheapest_first_and_refuse_a_nonpositive_scale():
    assert C.cells(["a.yaml", "b.yaml"], [2, 1], 30) == [
        ("a.yaml", 1, 30),
        ("b.yaml", 1, 30),
        ("a.yaml", 2, 60),
        ("b.yaml", 2, 60),
    ]
    assert C.cell_name("configs/models/defectdet-pico.yaml", 60) == "defectdet-pico-e60"
    with pytest.raises(ConfigError, match="--scales 0: expected a positive"):
        C.cells(["a.yaml"], [0], 30)


def test_table_of_kfold_and_plain_cells(tmp_path):
    """A k-fold cell is read from its pooled kfold.json (the 90 %-confidence part rule), a plain one from
    its seeds' result.json (medians); rows sort by data, model, epochs."""
    budget = {"model": "/x/configs/models/defectdet-pico.yaml", "epochs": 60}
    rule = {"escapes": 2, "n_defective": 52, "overkills": 9, "n_clean": 347}
    k = {
        "map50_pooled": 0.5,
        "line": rule,
        "line_part90": rule,
        "wall_s": 600,
        "images_per_s": [7.0, 9.0],
        "load_1m": [2.1, 2.3],
    }
    kf = tmp_path / "defectdet-pico-e60" / "ksdd-kfold5" / "recipe" / "seed0" / "kfold.json"
    kf.parent.mkdir(parents=True)
    kf.write_text(json.dumps({"data_tag": "ksdd-kfold5", "budget": budget, "kfold": k}))
    for seed, (m, e) in enumerate([(0.8, 0.01), (0.9, 0.03), (0.7, 0.02)]):
        r = tmp_path / "defectdet-pico-e30" / "pcb" / "recipe" / f"seed{seed}" / "result.json"
        r.parent.mkdir(parents=True)
        r.write_text(
            json.dumps(
                {
                    "data_tag": "pcb",
                    "budget": {**budget, "epochs": 30},
                    "map50": m,
                    "escape_line_any": e,
                    "overkill_line_any": 0.04,
                    "calibration_line_any": {},
                    "escape_line_good": e / 2,
                    "overkill_line_good": 0.03,
                    "calibration_line_good": {},
                    "wall_s": 100 * (seed + 1),
                    "images_per_s": 10.0,
                    "load_1m": 2.0,
                }
            )
        )
    for fold, (m, esc) in enumerate([(0.4, 1), (0.3, 2)]):  # a later cell with two folds done so far
        r = tmp_path / "defectdet-pico-e120" / f"ksdd-kfold5-fold{fold}" / "recipe" / "seed0" / "result.json"
        r.parent.mkdir(parents=True)
        cal = {"escapes": esc, "n_defective": 10, "overkills": 1, "n_clean": 70}
        r.write_text(
            json.dumps(
                {
                    "data_tag": r.parents[2].name,
                    "budget": {**budget, "epochs": 120},
                    "map50": m,
                    "calibration_line_any": cal,
                    "wall_s": 60,
                    "images_per_s": 9.0,
                }
            )
        )
    rows = C.collect(tmp_path)
    assert [(r["data"], r["epochs"], "folds" in r) for r in rows] == [
        ("ksdd-kfold5", 60, False),
        ("ksdd-kfold5", 120, True),
        ("pcb", 30, False),
        ("pcb", 30, False),  # the per-class rule, then the good-part rule
    ]
    assert rows[1]["map50"] == pytest.approx(0.35) and (rows[1]["escapes"], rows[1]["n_defective"]) == (3, 20)
    text = C.table(rows)
    assert (
        "| ksdd-kfold5 | defectdet-pico | 120 | fold 0: 0.400, 1: 0.300 (median) | 0.350 | 3/20 (15.0%) |"
        in text
    )
    other = tmp_path / "defectdet-pico-e120" / "ksdd-kfold5-fold0" / "recipe" / "seed1" / "result.json"
    other.parent.mkdir(parents=True)
    other.write_text((other.parents[1] / "seed0" / "result.json").read_text())
    assert "| 120 | seed1, fold 0: 0.400 (median) | 0.400 | 1/10 (10.0%) |" in C.table(C.collect(tmp_path))
    rows = [r for r in rows if "folds" not in r]
    assert rows[1]["map50"] == 0.8 and rows[1]["escape"] == 0.02 and rows[1]["wall_s"] == 200
    text = C.table(rows)
    assert (
        "| ksdd-kfold5 | defectdet-pico | 60 | 1 seed × folds, pooled | 0.500 | 2/52 (3.8%) | 9/347 (2.6%) |"
        in text
    )
    assert "| pcb | defectdet-pico | 30 | 3 seeds (median) | 0.800 | 2.0% | 4.0% |" in text
    assert (
        "| pcb | defectdet-pico | 30 | 3 seeds (median) | 0.800 | 1.0% | 3.0% | part score, overkill @5% "
        "from good parts" in text
    )
    assert "8.0 (2.2)" in text


@pytest.mark.slow
def test_smoke_two_budgets_on_a_synthetic_set(tmp_path, capsys):
    """1 and 2 epochs of pico at imgsz 64 (~20 s): two cells, their table, and a rerun from the cache."""
    args = [
        "--data",
        "synthetic",
        "--synthetic-images",
        "40",
        "--imgsz",
        "64",
        "--batch",
        "8",
        "--workers",
        "0",
        "--models",
        str(C.Q.BUDGETS["cpu"]["model"]),
        "--epochs",
        "1",
        "--scales",
        "1",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--archive",
        str(tmp_path / "kept"),
    ]
    assert C.main(args) == 0
    text = (tmp_path / "out" / "curve.md").read_text()
    assert "| synthetic | defectdet-pico | 1 |" in text and "| synthetic | defectdet-pico | 2 |" in text
    capsys.readouterr()
    assert C.main(args) == 0
    assert capsys.readouterr().out.count("quality: cached") == 2
    assert C.main(["--report-only", "--out", str(tmp_path / "kept")]) == 0
    assert (tmp_path / "kept" / "curve.md").read_text() == text


def test_kfold_cell_gives_one_row_per_decision_rule(tmp_path):
    """A pooled kfold.json holding both rules: the escape-calibrated row, then the good-part row."""
    budget = {"model": "/x/configs/models/defectdet-pico.yaml", "epochs": 60}
    k = {
        "map50_pooled": 0.46,
        "line_part90": {"escapes": 1, "n_defective": 52, "overkills": 37, "n_clean": 347},
        "overkill_part90": {"escapes": 2, "n_defective": 52, "overkills": 12, "n_clean": 347},
        "wall_s": 600,
    }
    kf = tmp_path / "defectdet-pico-e60" / "ksdd-kfold5" / "recipe" / "seed0" / "kfold.json"
    kf.parent.mkdir(parents=True)
    kf.write_text(json.dumps({"data_tag": "ksdd-kfold5", "budget": budget, "kfold": k}))
    text = C.table(C.collect(tmp_path))
    first = text.index("| 1/52 (1.9%) | 37/347 (10.7%) | part score, escape @1% from defective parts")
    second = text.index("| 2/52 (3.8%) | 12/347 (3.5%) | part score, overkill @5% from good parts")
    assert first < second
    with pytest.raises(Exception, match="--repool: expected together with --report-only"):
        C.main(["--out", str(tmp_path), "--repool"])
