"""bench/grid.py: the sampler x focal grid is 9 bench/quality.py arms; its 3 x 3 tables read the caches and
archives (seeds or k-fold, partial grids included), mark the cell that today's auto picks, and a rerun
reads finished cells from the cache or the archive instead of training them again."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import grid as G
from defectdet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_grid_is_every_pair_once_default_first():
    assert sorted(G.ORDER) == sorted(f"{d}+{g}" for d in G.FRACTIONS for g in G.GAMMAS)
    assert len(set(G.ORDER)) == 9 and G.ORDER[0] == "df50+g0"
    assert G.pick_cells(None) == list(G.ORDER)
    assert G.pick_cells(["df10+g2", "df50+g0"]) == ["df50+g0", "df10+g2"]  # always in ORDER
    assert G.arm_name("df25+g1") == "recipe+df25+g1"
    assert G.cell_settings("df25+g1") == {
        "sampling": "defect",
        "defect_fraction": 0.25,
        "cls_loss": "focal",
        "gamma": 1.0,
        "alpha": 0.5,
        "cls": 4.0,
    }
    with pytest.raises(ConfigError, match=r"--cells df33\+g0 g1: expected cells of the grid"):
        G.pick_cells(["df50+g0", "df33+g0", "g1"])


def test_a_bad_cell_is_one_line_on_the_command_line():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "grid.py"), "--cells", "df50+g3", "--report-only"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "bench/grid.py: error: --cells df50+g3: expected cells of the grid, df10|df25|df50 + g0|g1|g2 "
        "(e.g. df25+g1)"
    ]


def test_match_cell_needs_every_pinned_key():
    pick = {"sampling": "defect", "defect_fraction": 0.5, "cls_loss": "focal", "gamma": 0.0, "alpha": 0.5}
    assert G.match_cell({**pick, "cls": 1.0}) == "df50+g0"
    assert G.match_cell({**pick, "defect_fraction": 0.25, "gamma": 1.0, "cls": 4.0}) == "df25+g1"
    assert G.match_cell({**pick, "gamma": 2.0, "alpha": 0.25, "cls": 4.0}) is None  # the focal preset
    assert G.match_cell({**pick, "sampling": "uniform", "defect_fraction": None, "cls": 1.0}) is None


def test_auto_pick_on_the_smoke_set(tmp_path):
    """The synthetic set (30 % defective parts): sampling=auto draws half its epochs from defective parts,
    and with the sampler on cls_loss=auto picks focal_balanced: the df50+g0 cell."""
    from bench import quality as Q

    opts = Q._parser().parse_args(["--data", "synthetic", "--synthetic-images", "40"])
    data = Q._resolve_data("synthetic", tmp_path, opts, 64)
    pick = G.auto_pick(data, 64)
    assert (pick["sampling"], pick["defect_fraction"], pick["preset"]) == ("defect", 0.5, "focal_balanced")
    assert (pick["gamma"], pick["alpha"], pick["cls"], pick["cell"]) == (0.0, 0.5, 1.0, "df50+g0")
    assert "sampling=defect draws 50% defective images" in pick["rule"]


# ----------------------------------------------------------------------------- tables from results
def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _seed(map50, escapes, overkills, reachable=True):
    cal = {
        "escapes": escapes,
        "n_defective": 300,
        "overkills": overkills,
        "n_clean": 300,
        "reachable": reachable,
    }
    return {"map50": map50, "calibration_line_any": cal}


AUTO = {
    "sampling": "defect",
    "defect_fraction": 0.5,
    "preset": "focal_balanced",
    "gamma": 0.0,
    "alpha": 0.5,
    "cls": 1.0,
    "imgsz": 320,
    "rule": "sampling=defect draws 50% defective images (sampled imbalance 244:1) -> balanced. Rule: ...",
    "cell": "df50+g0",
}


def test_tables_mark_auto_and_not_run_cells(tmp_path):
    out, kept = tmp_path / "out", tmp_path / "kept"
    pcb = out / "pcb"
    for seed, (m, esc, ovk) in enumerate([(0.85, 3, 16), (0.84, 4, 13), (0.86, 1, 12)]):
        _write(pcb / "recipe+df50+g0" / f"seed{seed}" / "result.json", _seed(m, esc, ovk))
    _write(pcb / "recipe+df50+g1" / "seed0" / "result.json", _seed(0.80, 5, 20, reachable=False))
    _write(pcb / G.AUTO_FILE, AUTO)
    _write(pcb / "recipe" / "seed0" / "result.json", _seed(0.1, 0, 0))  # not a grid arm: left out
    # the archive: a cell only kept there (an earlier session), and a copy of a seed the cache holds too
    _write(kept / "pcb" / "recipe+df10+g2" / "seed0" / "result.json", _seed(0.70, 9, 30))
    _write(kept / "pcb" / "recipe+df50+g0" / "seed0" / "result.json", _seed(0.10, 99, 99))
    # a k-fold set: one pooled cell, one cell with 2 of 5 folds trained, auto outside the grid
    ks = out / "ksdd-kfold5"
    line = {"escapes": 2, "n_defective": 52, "overkills": 40, "n_clean": 347, "reachable": True}
    _write(ks / "recipe+df25+g2" / "seed0" / "kfold.json", {"kfold": {"map50_pooled": 0.5, "line": line}})
    for f in (0, 1):
        _write(out / f"ksdd-kfold5-fold{f}" / "recipe+df10+g0" / "seed0" / "result.json", _seed(0.3, 1, 2))
    _write(ks / G.AUTO_FILE, {**AUTO, "sampling": "uniform", "defect_fraction": None, "cell": None})

    sets = G.collect([out, kept])
    assert sorted(sets) == ["ksdd-kfold5", "pcb"]
    assert sets["pcb"]["runs"]["df50+g0"]["seed0"]["map50"] == 0.85  # the cache wins over the archive
    text = G.table(sets)
    lines = text.splitlines()
    assert "**pcb** (3 of 9 cells run; mAP50: median over seeds)" in lines
    assert "| defect_fraction | γ=0 (α 0.5, cls 1) | γ=1 (α 0.5, cls 4) | γ=2 (α 0.5, cls 4) |" in lines
    assert (
        "| 0.1 | not run | not run | mAP50 0.700 · escape 9/300 · overkill 30/300 (1 of 3 seeds) |" in lines
    )
    assert "| 0.25 | not run | not run | not run |" in lines
    assert (
        "| 0.5 | **auto:** mAP50 0.850 · escape 3/300 · overkill 13/300 | "
        "mAP50 0.800 · escape 5/300 · overkill 20/300 † (1 of 3 seeds) | not run |"
    ) in lines
    assert (
        "auto (`defectdet train`'s defaults on this set's train split at imgsz 320): sampling=defect, "
        "defect_fraction=0.5, focal_balanced (γ=0, α=0.5, cls 1) = the cell marked **auto**. Its reason: "
        "sampling=defect draws 50% defective images (sampled imbalance 244:1) -> balanced."
    ) in lines
    assert "**ksdd-kfold5** (1 of 9 cells run; 5-fold, mAP50 pooled over the folds)" in lines
    assert "| 0.1 | not run (2 of 5 folds trained) | not run | not run |" in lines
    assert "| 0.25 | not run | not run | mAP50 0.500 · escape 2/52 · overkill 40/347 |" in lines
    assert "= outside this grid (no cell marked)" in text and text.count("**auto:**") == 1
    assert text.index("**ksdd-kfold5**") < text.index("**pcb**")


def test_a_set_that_has_only_started_and_no_results_at_all(tmp_path):
    _write(tmp_path / "pcb" / G.AUTO_FILE, AUTO)
    text = G.table(G.collect([tmp_path, tmp_path / "absent"]))
    assert "**pcb** (0 of 9 cells run; mAP50: median over seeds)" in text
    assert "| 0.5 | **auto:** not run | not run | not run |" in text
    assert G.table(G.collect([tmp_path / "absent"])) == G.NO_RESULTS + "\n"


def test_report_only_writes_the_page(tmp_path):
    page = tmp_path / "quality.md"
    page.write_text("# q\n<!-- grid-table:start -->\nold\n<!-- grid-table:end -->\ntail\n")
    assert G.main(["--report-only", "--out", str(tmp_path / "none"), "--page", str(page)]) == 0
    assert page.read_text() == (
        f"# q\n<!-- grid-table:start -->\n{G.NO_RESULTS}\n<!-- grid-table:end -->\ntail\n"
    )


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_smoke_two_cells_cached_and_resumed_from_the_archive(tmp_path, capsys):
    """Two cells, 1 epoch of pico at imgsz 64 (~20 s): the table, a rerun from the cache, and a run in a
    fresh --out with the same --archive that trains nothing (an earlier session's cells count as done)."""
    small = ["--synthetic-images", "40", "--imgsz", "64", "--batch", "8", "--workers", "0", "--epochs", "1"]
    kept, page = tmp_path / "kept", tmp_path / "page.md"
    page.write_text("<!-- grid-table:start -->\n<!-- grid-table:end -->\n")
    args = [*small, "--cells", "df10+g2", "df50+g0", "--archive", str(kept), "--page", str(page)]
    assert G.main(["--data", "synthetic", *args, "--out", str(tmp_path / "a")]) == 0
    text = (tmp_path / "a" / "grid.md").read_text()
    assert "**synthetic** (2 of 9 cells run; mAP50: median over seeds)" in text
    assert "| 0.5 | **auto:** mAP50 " in text and "| 0.25 | not run | not run | not run |" in text
    assert text.strip() in page.read_text()
    assert json.loads((kept / "synthetic" / G.AUTO_FILE).read_text())["cell"] == "df50+g0"
    res = json.loads((kept / "synthetic" / "recipe+df10+g2" / "seed0" / "result.json").read_text())
    r = res["resolved"]  # what training recorded in defectdet.yaml
    assert (r["cls_loss"], r["gamma"], r["alpha"], r["cls"]) == ("focal", 2.0, 0.5, 4.0)
    assert (r["sampling"], r["defect_fraction"]) == ("defect", 0.1)
    capsys.readouterr()
    data = str(tmp_path / "a" / "synthetic" / "data" / "data.yaml")  # the same set, another --out
    assert G.main(["--data", data, *args, "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.count("quality: cached") == 2
    assert not list((tmp_path / "b").rglob("*.pt"))
    assert (tmp_path / "b" / "grid.md").read_text() == text
    assert G.main(["--report-only", "--out", str(kept)]) == 0
    assert (kept / "grid.md").read_text() == text
