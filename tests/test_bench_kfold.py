"""bench/kfold.py (``bench/quality.py --kfold``): stratified folds, cross-fitted part KPIs that never count
a part at a threshold fitted on it, the pooled operating curve (worked numbers), and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import benchscripts
import numpy as np
import pytest

from defectdet import metrics as M

K = benchscripts.load("kfold")
Q = benchscripts.load("quality")
GT = [10.0, 10.0, 50.0, 50.0]
FAR = [200.0, 200.0, 240.0, 240.0]  # IoU 0 with GT


def _part(score=None, defective=False, name="", box=FAR):
    """One part; ``score``: the confidence of its one detection (at ``box``: far from the defect by
    default), None = no detection."""
    dets = [] if score is None else [(box, score, 0)]
    return M.ImageDetections(
        boxes=np.array([d[0] for d in dets]).reshape(-1, 4),
        conf=[d[1] for d in dets],
        cls=[d[2] for d in dets],
        gt_boxes=np.array([GT] if defective else []).reshape(-1, 4),
        gt_cls=[0] if defective else [],
        name=name,
    )


def test_deal_folds_is_stratified_and_deterministic():
    imgs = [Path(f"/d/img{i:03d}.jpg") for i in range(53)]
    defective = [i % 5 == 0 for i in range(53)]  # 11 defective, 42 clean
    fold = K.deal_folds(imgs, defective, 5)
    assert fold == K.deal_folds(list(imgs), list(defective), 5)
    per_fold_def = [sum(1 for f, d in zip(fold, defective) if d and f == k) for k in range(5)]
    per_fold_all = [fold.count(k) for k in range(5)]
    assert sorted(per_fold_def) == [2, 2, 2, 2, 3]  # 11 defective parts dealt round-robin
    assert max(per_fold_all) - min(per_fold_all) <= 2
    with pytest.raises(ValueError, match="at least 2"):
        K.deal_folds(imgs, defective, 1)


def test_cross_fitted_calibrates_on_the_other_folds_only():
    """Fold 0's defective part scores 0.2, fold 1's scores 0.8; clean parts 0.5 in both. At a 0 % target
    fold 0 is counted at fold 1's threshold (just under 0.8): its defect escapes, its clean part passes.
    Fold 1 is counted at fold 0's threshold (under 0.2): caught, and its clean part is flagged."""
    folds = [[_part(0.2, True, "a"), _part(0.5, False, "b")], [_part(0.8, True, "c"), _part(0.5, False, "d")]]
    r = K.cross_fitted(folds, ["defect"], target_escape=0.0, rule="any")
    assert (r["escapes"], r["n_defective"], r["overkills"], r["n_clean"]) == (1, 2, 1, 2)
    assert r["per_fold"][0]["escapes"] == 1 and r["per_fold"][0]["overkills"] == 0
    assert r["per_fold"][1]["escapes"] == 0 and r["per_fold"][1]["overkills"] == 1
    assert r["per_fold"][0]["thresholds"]["defect"] > 0.5 > r["per_fold"][1]["thresholds"]["defect"]
    assert r["escape"] == 0.5 and r["overkill"] == 0.5


def test_cross_fitted_overkill_rule_sets_each_fold_from_the_others_good_parts():
    """Fold 0: defect 0.3, good 0.2 0.1 0.05; fold 1: defect 0.9, good 0.5 0.4 0.35. At 25 % overkill
    (split conformal, 3 good parts: (j + 1) / 4 <= 0.25 -> j = 0) each fold is counted just above the
    other fold's highest good part: fold 0 at 0.5 (its defect escapes), fold 1 at 0.2 (three good parts
    flagged). The rule never looks at a defective part."""
    folds = [
        [_part(0.3, True), _part(0.2), _part(0.1), _part(0.05)],
        [_part(0.9, True), _part(0.5), _part(0.4), _part(0.35)],
    ]
    r = K.cross_fitted(folds, ["defect"], None, "any", "part", None, target_overkill=0.25)
    assert [(f["escapes"], f["overkills"]) for f in r["per_fold"]] == [(1, 0), (0, 3)]
    assert r["per_fold"][0]["thresholds"]["defect"] == pytest.approx(0.5) and r["reachable"]
    assert r["target_overkill"] == 0.25 and r["target_escape"] is None
    moved = [[_part(0.01, True), *folds[0][1:]], folds[1]]  # a defect's score changes nothing but itself
    assert (
        K.cross_fitted(moved, ["defect"], None, "any", "part", None, 0.25)["per_fold"][1] == r["per_fold"][1]
    )
    few = K.cross_fitted(folds, ["defect"], None, "any", "part", 0.9, target_overkill=0.05)
    # 3 good parts cannot bound 5 % at 90 %: unreachable, the threshold above all of them as before
    assert not few["reachable"] and [(f["escapes"], f["overkills"]) for f in few["per_fold"]] == [
        (1, 0),
        (0, 3),
    ]


def test_repool_scores_a_new_rule_on_kept_folds(tmp_path):
    """A kfold.json made before a rule existed is recomputed from the folds' kept detections."""
    base = tmp_path / "ksdd-kfold2"
    folds = [
        [_part(0.8, True), *[_part(0.01 * i) for i in range(30)]],
        [_part(0.7, True), *[_part(0.011 * i) for i in range(30)]],
    ]
    for f, parts in enumerate(folds):
        d = tmp_path / f"ksdd-kfold2-fold{f}" / "recipe" / "seed0"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"map50": 0.5, "images_per_s": 5.0, "wall_s": 10}))
        K.save_detections(d / "dets.json.gz", parts)
    old = K.pooled_result([{"map50": 0.5}] * 2, folds, ["defect"], 0.01, 0.05)
    del old["overkill_part90"]
    kf = base / "recipe" / "seed0" / "kfold.json"
    kf.parent.mkdir(parents=True)
    kf.write_text(json.dumps({"data_tag": "ksdd-kfold2", "kfold": old}))
    new = K.repool(kf)["kfold"]
    assert json.loads(kf.read_text())["kfold"] == json.loads(json.dumps(new))
    # 30 good parts: P(Binomial(30, 0.05) >= 1) = 0.785 < 0.9, unreachable: each fold is counted just above
    # the other's highest good part: fold 0 at 0.319 (none of its own flagged), fold 1 at 0.29 (0.297,
    # 0.308 and 0.319 flagged); both defects caught
    r = new["overkill_part90"]
    assert not r["reachable"] and (r["escapes"], r["overkills"]) == (0, 3)
    assert new["line"]["target_escape"] == 0.01 and new["target"]["target_escape"] == 0.05
    assert new["wall_s"] == 20 and new["images_per_s"] == [5.0, 5.0]
    (tmp_path / "ksdd-kfold2-fold1" / "recipe" / "seed0" / "dets.json.gz").unlink()
    with pytest.raises(FileNotFoundError, match="fold results missing"):
        K.repool(kf)


def test_operating_curve_worked_numbers():
    """Defective scores 0.9 0.8 0.7 0.3 and one without a detection; clean 0.75 0.6 0.1 + 17 without.
    <= 2 escapes: threshold 0.7 (0.3 and the undetected part escape) -> clean 0.75 flagged: 1/20.
    <= 5 % overkill of 20 clean = 1 allowed: threshold just above 0.6 -> 0.3 and undetected escape: 2."""
    parts = [_part(s, True) for s in (0.9, 0.8, 0.7, 0.3, None)]
    parts += [_part(s) for s in (0.75, 0.6, 0.1)] + [_part(None) for _ in range(17)]
    c = K.operating_curve(parts, 1)
    assert (c["n_defective"], c["n_clean"]) == (5, 20)
    assert c["reachable"] and c["overkills_at"] == 1 and c["overkill_at"] == pytest.approx(0.05)
    assert c["escapes_for"] == 2  # 0.3 and the undetected part, at threshold 0.7
    assert c["escapes_at"] == 2 and c["escape_at"] == pytest.approx(0.4)
    c = K.operating_curve(parts, 1, max_escapes=0)  # the undetected part cannot be caught
    assert not c["reachable"] and c["overkill_at"] is None
    tied = [_part(s, True) for s in (0.9, 0.7, 0.7)] + [_part(0.8)]
    c = K.operating_curve(tied, 1, max_escapes=1)  # at 0.7 both tied parts are caught: none escapes
    assert (c["escapes_for"], c["overkills_at"]) == (0, 1)


def test_kfold_smoke_run_pools_every_part_once(tmp_path, capsys):
    """2 folds x 1 epoch at imgsz 64 on a synthetic set: every image held out exactly once, a pooled
    kfold.json, the table, and a rerun that trains nothing."""
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
        "--arms",
        "recipe",
        "--epochs",
        "1",
        "--kfold",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert Q.main(args) == 0
    base = tmp_path / "synthetic-kfold2"
    held = [set((base / f"fold{f}" / "val.txt").read_text().split()) for f in range(2)]
    trained = [set((base / f"fold{f}" / "train.txt").read_text().split()) for f in range(2)]
    assert not held[0] & held[1] and held[0] == trained[1] and held[1] == trained[0]
    res = json.loads((base / "recipe" / "seed0" / "kfold.json").read_text())
    kf = res["kfold"]
    fold0 = json.loads((tmp_path / "synthetic-kfold2-fold0" / "recipe" / "seed0" / "result.json").read_text())
    assert fold0["omp_wait_policy"] == "PASSIVE" and fold0["load_1m"] >= 0  # the load beside train img/s
    assert kf["folds"] == 2 and len(kf["map50_folds"]) == 2
    assert kf["line"]["n_defective"] + kf["line"]["n_clean"] == len(held[0] | held[1])
    table = (tmp_path / "quality_kfold.md").read_text()
    assert "| synthetic-kfold2 | recipe | 0 |" in table and "part score @1%, 90% conf." in table
    capsys.readouterr()
    kept = tmp_path / "kept"
    page = tmp_path / "page.md"
    page.write_text("# q\n<!-- kf:start -->\nold\n<!-- kf:end -->\ntail\n")
    assert Q.main([*args, "--archive", str(kept), "--page", str(page), "--marker", "kf"]) == 0
    assert capsys.readouterr().out.count("quality: cached") == 2
    assert page.read_text() == f"# q\n<!-- kf:start -->\n{table.strip()}\n<!-- kf:end -->\ntail\n"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*.json*")) == [
        "synthetic-kfold2-fold0/recipe/seed0/dets.json.gz",
        "synthetic-kfold2-fold0/recipe/seed0/result.json",
        "synthetic-kfold2-fold1/recipe/seed0/dets.json.gz",
        "synthetic-kfold2-fold1/recipe/seed0/result.json",
        "synthetic-kfold2/recipe/seed0/kfold.json",
    ]
    # a later session on a fresh machine: the same --out, emptied; the archive alone -> pooled, nothing
    # trained
    import shutil

    moved = shutil.move(str(kept), str(tmp_path.parent / f"{tmp_path.name}-kept"))
    shutil.rmtree(tmp_path)
    capsys.readouterr()
    assert Q.main([*args, "--archive", moved]) == 0
    assert capsys.readouterr().out.count("quality: cached") == 2
    again = json.loads((tmp_path / "synthetic-kfold2" / "recipe" / "seed0" / "kfold.json").read_text())
    assert (
        again["kfold"]["line"] == kf["line"]
        and not (tmp_path / "synthetic-kfold2-fold0" / "recipe" / "seed0" / "weights").exists()
    )
