"""bench/quality.py: the metric and table helpers on constructed cases (worked numbers in the tests),
the arm selection, and one tiny end-to-end run (2 arms, 1 epoch, imgsz 64) with its cache, resume and
--report-only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import benchscripts
import numpy as np
import pytest

from defectdet import metrics as M
from defectdet.data.stats import dataset_stats
from defectdet.evaluate import build_report
from defectdet.part_rule import calibrate_overkill_threshold

ROOT = Path(__file__).resolve().parents[1]
Q = benchscripts.load("quality")

NAMES = ["common", "rare"]
GT = [10.0, 10.0, 50.0, 50.0]  # one defect box (pixels)
HIT = [11.0, 11.0, 50.0, 50.0]  # IoU 0.95 with GT
MISS = [200.0, 200.0, 240.0, 240.0]  # IoU 0 with GT


def _img(dets=(), gt_cls=(), name=""):
    """An image with one GT box per entry of ``gt_cls`` (all at GT) and detections (box, conf, cls)."""
    boxes = [d[0] for d in dets]
    return M.ImageDetections(
        boxes=np.array(boxes).reshape(-1, 4),
        conf=[d[1] for d in dets],
        cls=[d[2] for d in dets],
        gt_boxes=np.array([GT] * len(gt_cls)).reshape(-1, 4),
        gt_cls=list(gt_cls),
        name=name,
    )


# ----------------------------------------------------------------------------- recall at FP/image
def _rare_case():
    """10 images, 4 'rare' defects. Rare-class detections by confidence:
    0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 TP, 0.4 FP, 0.3 TP; 'common' detections are noise elsewhere."""
    imgs = [
        _img([(HIT, 0.9, 1)], [1]),
        _img([(MISS, 0.8, 1)]),
        _img([(HIT, 0.7, 1)], [1]),
        _img([(MISS, 0.6, 1), (MISS, 0.95, 0)]),
        _img([(HIT, 0.5, 1)], [1]),
        _img([(MISS, 0.4, 1)]),
        _img([(HIT, 0.3, 1)], [1]),
    ]
    return imgs + [_img() for _ in range(3)]


@pytest.mark.parametrize(
    "fp_per_image, recall, threshold, fp",
    [
        (0.0, 0.25, 0.9, 0),  # no FP allowed: stop before 0.8 -> 1 of 4
        (0.1, 0.50, 0.7, 1),  # 1 FP in 10 images: down to 0.7 -> 2 of 4
        (0.2, 0.75, 0.5, 2),  # 2 FPs -> 3 of 4
        (0.3, 1.00, 0.3, 3),  # 3 FPs -> all 4
        (5.0, 1.00, 0.3, 3),
    ],
)
def test_recall_at_fp_rate_worked_numbers(fp_per_image, recall, threshold, fp):
    out = Q.recall_at_fp_rate(_rare_case(), c=1, nc=2, fp_per_image=fp_per_image)
    assert out["recall"] == pytest.approx(recall)
    assert out["threshold"] == pytest.approx(threshold)
    assert out["fp"] == fp and out["n_gt"] == 4


def test_recall_at_fp_rate_ignores_other_classes_and_scale():
    """Only the class's own false positives count, and only the ranking matters (a monotone re-scaling
    of every confidence, as a focal loss causes, gives the same recall)."""
    base = Q.recall_at_fp_rate(_rare_case(), 1, 2, 0.1)["recall"]
    squashed = [
        M.ImageDetections(im.boxes, im.conf**3, im.cls, im.gt_boxes, im.gt_cls) for im in _rare_case()
    ]
    assert Q.recall_at_fp_rate(squashed, 1, 2, 0.1)["recall"] == base
    noisy = _rare_case() + [_img([(MISS, 0.99, 0)] * 5) for _ in range(2)]  # 10 'common' FPs at the top
    assert Q.recall_at_fp_rate(noisy, 1, 2, 0.1)["recall"] == pytest.approx(
        0.5
    )  # 12 images: 1.2 -> 1 rare FP


def test_recall_at_fp_rate_keeps_ties_together():
    """A TP and an FP at the same confidence cannot be separated by a threshold: with 0 FPs allowed
    the tie is excluded as a whole."""
    imgs = [_img([(HIT, 0.9, 1)], [1]), _img([(HIT, 0.5, 1)], [1]), _img([(MISS, 0.5, 1)])]
    assert Q.recall_at_fp_rate(imgs, 1, 2, 0.0)["recall"] == pytest.approx(0.5)
    assert Q.recall_at_fp_rate(imgs, 1, 2, 1 / 3)["recall"] == pytest.approx(1.0)


def test_recall_at_fp_rate_no_labels_or_no_detections():
    assert Q.recall_at_fp_rate([_img()], 1, 2, 0.1)["recall"] == 0.0
    out = Q.recall_at_fp_rate([_img(gt_cls=[1])], 1, 2, 0.1)
    assert out["recall"] == 0.0 and math.isinf(out["threshold"])


# ----------------------------------------------------------------------------- cross-fitted calibration
def test_cross_calibrated_kpis_sums_folds_fitted_on_the_other_half():
    rng = np.random.default_rng(0)
    imgs = []
    for i in range(24):
        defective = i % 3 == 0
        dets = [(HIT if defective else MISS, float(rng.uniform(0.2, 0.9)), i % 2)]
        imgs.append(_img(dets, [i % 2] if defective else []))
    out = Q.cross_calibrated_kpis(imgs, NAMES, target_escape=0.1)
    manual = {"escapes": 0, "overkills": 0, "n_defective": 0, "n_clean": 0}
    for f in (0, 1):
        fitted = build_report([im for i, im in enumerate(imgs) if i % 2 != f], NAMES, target_escape=0.1)
        rep = build_report(imgs[f::2], NAMES, thresholds=fitted.thresholds)
        for k in manual:
            manual[k] += getattr(rep, k)
    assert {k: out[k] for k in manual} == manual
    assert manual["n_defective"] == 8 and manual["n_clean"] == 16
    assert out["escape"] == pytest.approx(manual["escapes"] / 8)
    assert out["overkill"] == pytest.approx(manual["overkills"] / 16)


def test_cross_calibrated_kpis_line_rule_counts_any_detection():
    """A defective part whose only box is misplaced escapes by the box rule, not by the line's rule."""
    imgs = [_img([(MISS, 0.8, 0)], [0]), _img([(HIT, 0.8, 0)], [0]), _img(), _img()] * 2  # folds alike
    box = Q.cross_calibrated_kpis(imgs, NAMES, target_escape=0.0)
    line = Q.cross_calibrated_kpis(imgs, NAMES, target_escape=0.0, rule="any")
    assert (box["escapes"], box["n_defective"], box["reachable"]) == (2, 4, False)
    assert (line["escapes"], line["overkills"], line["reachable"]) == (0, 0, True)


def test_cross_calibrated_kpis_without_clean_parts_has_no_overkill():
    imgs = [_img([(HIT, 0.8, 0)], [0]) for _ in range(4)]
    out = Q.cross_calibrated_kpis(imgs, NAMES, 0.05)
    assert out["overkill"] is None and out["escape"] == 0.0 and out["reachable"]


def test_good_part_kpis_calibrate_on_the_other_halfs_good_parts():
    """Each half is counted at a threshold set from the other half's good parts alone (5 % at 90 %
    confidence needs >= 45 good parts: 60 a half here), so a defective part's score never moves it."""
    rng = np.random.default_rng(1)
    imgs = [_img([(MISS, float(rng.uniform(0.0, 0.5)), 0)]) for _ in range(120)]
    imgs += [_img([(HIT, float(s), 0)], [0]) for s in (0.45, 0.9, 0.95, 0.97)]
    out = Q.good_part_kpis(imgs, NAMES, 0.05)
    assert (out["n_defective"], out["n_clean"]) == (4, 120) and out["reachable"]
    manual = {"escapes": 0, "overkills": 0}
    for f in (0, 1):
        cal = M.PartScores.from_images(imgs[1 - f :: 2], len(NAMES), "any")
        t = calibrate_overkill_threshold(cal, 0.05, 0.9).thresholds
        rep = build_report(imgs[f::2], NAMES, thresholds=dict(zip(NAMES, t)), escape_rule="any")
        manual["escapes"] += rep.escapes
        manual["overkills"] += rep.overkills
    assert {k: out[k] for k in manual} == manual and out["overkill"] <= 0.05
    # 60 good parts at 90 %: j = 0, each threshold just above the other half's highest good score
    # (~0.5): the defect at 0.45 escapes, the three above 0.9 are caught
    assert out["escapes"] == 1


# ----------------------------------------------------------------------------- table
def _result(arm, seed, map50, tag="d", **kw):
    base = {
        "data_tag": tag,
        "arm": arm,
        "seed": seed,
        "map50": map50,
        "map50_95": map50 / 2,
        "rare_recall": 0.5,
        "escape": 0.04,
        "overkill": None,
        "images_per_s": 10.0,
        "loss": arm,
        "rarest_class": "rare",
    }
    return {**base, **kw}


def test_aggregate_median_spread_and_paired_delta():
    results = [
        _result("bce", 0, 0.40),
        _result("bce", 1, 0.50),
        _result("bce", 2, 0.60),
        _result("qfl", 0, 0.45),
        _result("qfl", 1, 0.49),
        _result("qfl", 2, 0.70),
    ]
    rows = {r["arm"]: r for r in Q.aggregate(results)}
    assert rows["bce"]["d_map50"] == [] and rows["bce"]["overkill"] == []
    assert rows["qfl"]["d_map50"] == pytest.approx([0.05, -0.01, 0.10])  # paired by seed
    table = Q.markdown_table(list(rows.values()), fp_per_image=0.1)
    line = next(s for s in table.splitlines() if "| qfl |" in s)
    assert "| 0.490 ± 0.125 |" in line  # median 0.49, half of 0.70 - 0.45
    assert "| +0.050 ± 0.055 |" in line  # paired deltas: median 0.05, half of 0.10 - (-0.01)
    assert "| n/a |" in line and "| 4.0% ± 0.0% |" in line
    assert "R_rare@0.1FP/img" in table.splitlines()[0]


def test_baseline_warning_only_below_threshold():
    low = Q.aggregate([_result("bce", 0, 0.1), _result("qfl", 0, 0.2), _result("bce", 0, 0.8, tag="ok")])
    warnings = Q.baseline_warnings(low)
    assert len(warnings) == 1 and "d:" in warnings[0] and "comparison is noise at this budget" in warnings[0]
    assert "no bce baseline" in Q.baseline_warnings(Q.aggregate([_result("qfl", 0, 0.9)]))[0]


# ----------------------------------------------------------------------------- arms
def _stats(neg_per_pos, counts=(5, 2, 9)):
    """The part of dataset_stats that recommend_preset and rarest_class read."""
    anchors = {"negatives_per_positive": neg_per_pos, "positive_fraction_in_defect_images": 1e-4}
    split = {
        "anchors": anchors,
        "defect_free_fraction": 0.5,
        "instances_per_class": dict(zip(("a", "b", "c"), counts)),
    }
    return {"splits": {"train": split}, "names": ["a", "b", "c"]}


def test_arms_add_the_recommended_preset_unless_it_is_a_duplicate():
    extreme = Q.arms_for(_stats(50000.0))  # -> focal_extreme, a fifth arm
    assert list(extreme) == ["bce", "focal", "qfl", "vfl", "focal_extreme"]
    assert extreme["focal_extreme"]["recommended"] and extreme["focal_extreme"]["gamma"] == 4.0
    standard = Q.arms_for(_stats(5000.0))  # -> focal (standard): the focal arm is marked, no duplicate
    assert list(standard) == ["bce", "focal", "qfl", "vfl"] and standard["focal"]["recommended"]
    assert list(Q.arms_for(_stats(50.0), ["bce", "recommended"])) == ["bce", "focal_balanced"]
    with pytest.raises(Q.ConfigError, match="--arms nope: expected one of bce, focal, qfl, vfl"):
        Q.arms_for(_stats(50.0), ["bce", "nope"])
    with pytest.raises(
        Q.ConfigError, match=r"--arms bce\+tiles: .*optionally followed by \+feature \(defect"
    ):
        Q.arms_for(_stats(50.0), ["bce+tiles"])


def test_recipe_arms_pin_or_add_the_data_recipe():
    arms = Q.arms_for(_stats(50.0), ["bce", "bce+defect+native", "recommended+paste", "recipe"])
    assert list(arms) == ["bce", "bce+defect+native", "focal_balanced+paste", "recipe"]
    assert arms["bce"] == {"cls_loss": "bce", "cls": 0.5, "sampling": "uniform", "crop": "off", "paste": 0.0}
    assert arms["bce+defect+native"] == {**arms["bce"], "sampling": "defect", "crop": "native"}
    assert arms["focal_balanced+paste"]["paste"] == 0.5 and "recommended" not in arms["focal_balanced+paste"]
    assert arms["recipe"] == {}  # defectdet train's defaults: every key auto
    assert Q.loss_label(arms["bce+defect+native"]) == "bce cls=0.5 sampling=defect crop=native"
    dense = Q.arms_for(_stats(50.0), ["bce+defect80+native"])["bce+defect80+native"]
    assert dense == {**arms["bce+defect+native"], "defect_fraction": 0.8}
    assert Q.loss_label(dense) == "bce cls=0.5 sampling=defect crop=native defect_fraction=0.8"


GRID = [f"recipe+df{n}+g{g}" for n in (10, 25, 50) for g in (0, 1, 2)]


def test_grid_arms_pin_the_sampler_share_and_the_focal_loss_over_the_defaults():
    """The 9 arms of bench/grid.py: the recipe arm (every key at defectdet train's default) with
    sampling=defect at the cell's share and focal at the cell's gamma, alpha 0.5 and the preset's gain."""
    from defectdet.train import load_settings

    arms = Q.arms_for(_stats(50000.0), GRID)  # the data's recommendation plays no part in recipe arms
    assert list(arms) == GRID
    for name, settings in arms.items():
        n, g = int(name.split("+")[1][2:]), int(name.split("+")[2][1:])
        assert settings == {
            "sampling": "defect",
            "defect_fraction": n / 100,
            "cls_loss": "focal",
            "gamma": float(g),
            "alpha": 0.5,
            "cls": 1.0 if g == 0 else 4.0,
        }
    loss = lambda s: {k: s[k] for k in ("cls_loss", "gamma", "alpha", "cls")}  # noqa: E731
    assert loss(arms["recipe+df50+g0"]) == load_settings("focal_balanced", [])
    assert loss(arms["recipe+df50+g1"]) == load_settings("focal_mild", [])
    assert loss(arms["recipe+df50+g2"]) == {**load_settings("focal", []), "alpha": 0.5}
    assert Q.arms_for(_stats(50.0), ["recipe"])["recipe"] == {}  # so nothing else differs from it
    assert (
        Q.loss_label(arms["recipe+df25+g1"]) == "focal γ=1 α=0.5 cls=4 sampling=defect defect_fraction=0.25"
    )


def test_features_that_set_one_key_twice_are_refused():
    with pytest.raises(
        Q.ConfigError,
        match=r"--arms recipe\+df10\+df25: features df10 and df25 both set defect_fraction \(0.1 vs 0.25\)",
    ):
        Q.arms_for(_stats(50.0), ["recipe+df10+df25"])
    with pytest.raises(Q.ConfigError, match="features g0 and g2 both set gamma"):
        Q.arms_for(_stats(50.0), ["recipe+g0+g2"])
    with pytest.raises(Q.ConfigError, match=r"--arms recipe\+df33: .*\+feature \(.*df10, df25, df50, g0"):
        Q.arms_for(_stats(50.0), ["recipe+df33"])
    same = Q.arms_for(_stats(50.0), ["recipe+defect+df25"])["recipe+defect+df25"]  # both: sampling=defect
    assert same == {"sampling": "defect", "defect_fraction": 0.25}


@pytest.mark.parametrize(
    "arm, error",
    [
        ("recipe+df33", "--arms recipe+df33: expected one of bce, focal, qfl, vfl, "),
        (
            "recipe+g1+g2",
            "--arms recipe+g1+g2: features g1 and g2 both set gamma (1.0 vs 2.0); "
            "expected at most one feature per key",
        ),
    ],
)
def test_a_bad_arm_is_one_line_on_the_command_line(tmp_path, arm, error):
    import subprocess
    import sys

    args = [*SMOKE[:2], "--synthetic-images", "10", "--imgsz", "64", "--arms", arm, "--out", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quality.py"), *args], capture_output=True, text=True
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"bench/quality.py: error: {error}")


def test_grid_arm_keys_reach_training(tmp_path, monkeypatch):
    """train_arm hands a grid arm's keys to defectdet.train, whose prepare() (everything before the
    training loop) keeps them: the explicit loss wins over cls_loss=auto (focal_balanced here) and the
    sampler draws the cell's share."""
    import defectdet.train as T
    from defectdet.recipe import TrainDataCallback

    opts = Q._parser().parse_args([*SMOKE, "--out", str(tmp_path)])
    data = Q._resolve_data("synthetic", tmp_path, opts, 64)
    arm = Q.arms_for(dataset_stats(data, imgsz=64), ["recipe+df25+g1"])["recipe+df25+g1"]
    seen = {}

    def prepare_only(callbacks=None, **settings):
        seen["yolo"], seen["args"], seen["loss"] = T.prepare(callbacks, **settings)
        return tmp_path

    monkeypatch.setattr(T, "train", prepare_only)
    budget = {**Q.BUDGETS["cpu"], "epochs": 1, "imgsz": 64, "batch": 8, "workers": 0}
    Q.train_arm(tmp_path / "run" / "seed0", data, arm, budget, 0, "cpu")
    assert seen["loss"] == {"cls_loss": "focal", "gamma": 1.0, "alpha": 0.5, "cls": 4.0}
    assert seen["args"]["cls"] == 4.0 and seen["args"]["seed"] == 0
    (recipe,) = [
        cb.recipe
        for cb in seen["yolo"].callbacks["on_pretrain_routine_start"]
        if isinstance(cb, TrainDataCallback)
    ]
    assert (recipe.sampling, recipe.defect_fraction) == ("defect", 0.25)


def test_rarest_class_and_loss_label():
    assert Q.rarest_class(_stats(1.0)) == 1
    assert Q.rarest_class(_stats(1.0, counts=(3, 7, 3))) == 0  # ties: lowest id
    assert (
        Q.loss_label({"cls_loss": "vfl", "gamma": 2.0, "alpha": 0.75, "cls": 3.0}) == "vfl γ=2 α=0.75 cls=3"
    )


# ----------------------------------------------------------------------------- end to end
class _StopAfterFirstEpoch(Exception):
    pass


def _stop(trainer):
    if trainer.epoch == 0:
        raise _StopAfterFirstEpoch


SMOKE = ["--data", "synthetic", "--synthetic-images", "40", "--imgsz", "64", "--batch", "8", "--workers", "0"]


def test_smoke_two_arms_cache_and_report(tmp_path, capsys):
    """2 arms x 1 epoch at imgsz 64 on a synthetic set (~10 s): table, JSON, both PNGs; a rerun uses
    the cache; another budget in the same --out is refused; --report-only rebuilds the table."""
    args = [*SMOKE, "--arms", "bce", "qfl", "--epochs", "1", "--out", str(tmp_path)]
    assert Q.main(args) == 0
    text = (tmp_path / "quality.md").read_text()
    assert "| synthetic | bce |" in text and "| synthetic | qfl |" in text
    assert "comparison is noise at this budget" in text  # 1 epoch learns nothing
    assert '"model": "configs/models/defectdet-pico.yaml"' in text  # committed tables name no machine
    res = json.loads((tmp_path / "synthetic" / "qfl" / "seed0" / "result.json").read_text())
    good = res["calibration_line_good"]
    assert good["n_defective"] + good["n_clean"] == res["n_images"] and "escape@ovk5% good parts" in text
    assert res["images_per_s"] > 0 and 0 <= res["map50"] <= 1 and res["fingerprint"]["epochs"] == 1
    for png in ("quality_pr.png", "quality_bars.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    mtime = (tmp_path / "synthetic" / "bce" / "seed0" / "result.json").stat().st_mtime
    capsys.readouterr()
    assert Q.main(args) == 0
    assert "quality: cached" in capsys.readouterr().out
    assert (tmp_path / "synthetic" / "bce" / "seed0" / "result.json").stat().st_mtime == mtime
    with pytest.raises(Q.ConfigError, match="another budget"):
        Q.main([*args, "--batch", "4"])
    (tmp_path / "quality.md").unlink()
    assert Q.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "quality.md").read_text() == text
    kept = tmp_path / "kept"  # --archive: result.json copies alone rebuild the same table
    assert Q.main([*args, "--archive", str(kept)]) == 0
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "synthetic/bce/seed0/result.json",
        "synthetic/qfl/seed0/result.json",
    ]
    assert Q.main(["--report-only", "--out", str(kept)]) == 0
    assert (kept / "quality.md").read_text() == text


def test_synthetic_sets_get_their_own_folder_and_tag(tmp_path):
    """A synthetic set with another defect rate or part size is made in its own folder (a cached set of
    other parts is never reused) and reported under its own tag."""
    opts = Q._parser().parse_args(
        [
            "--data",
            "synthetic",
            "--synthetic-images",
            "10",
            "--synthetic-defect-rate",
            "0.2",
            "--synthetic-px",
            "96",
        ]
    )
    data = Q._resolve_data("synthetic", tmp_path, opts, 64)
    assert Q.data_tag(data) == "synthetic-20pct-96px-10" and Path(data).is_file()
    assert len(list((Path(data).parent / "images").rglob("*.png"))) == 10
    assert Q.data_tag(str(tmp_path / "synthetic" / "data" / "data.yaml")) == "synthetic"  # the default set
    assert Q.data_tag("/sets/deeppcb/data_rare.yaml") == "deeppcb-data_rare"
    bad = Q._parser().parse_args(["--synthetic-defect-rate", "1.5"])
    with pytest.raises(Q.ConfigError, match="--synthetic-defect-rate 1.5: expected a fraction in"):
        Q._resolve_data("synthetic", tmp_path, bad, 64)


def test_interrupted_arm_resumes_from_last_checkpoint(tmp_path, capsys):
    """A 2-epoch arm stopped after epoch 1 continues from last.pt: epoch 1 is not trained again."""
    out2 = tmp_path
    opts = Q._parser().parse_args([*SMOKE, "--out", str(out2), "--epochs", "2"])
    data = Q._resolve_data("synthetic", out2, opts, 64)
    budget = {**Q.BUDGETS["cpu"], "epochs": 2, "imgsz": 64, "batch": 8, "workers": 0}
    stats = dataset_stats(data, imgsz=64)
    arm = Q.arms_for(stats, ["bce"])["bce"]
    with pytest.raises(_StopAfterFirstEpoch):
        Q.run_arm(out2, data, "bce", arm, budget, 0, opts, stats, callbacks={"on_fit_epoch_end": [_stop]})
    run = out2 / "synthetic" / "bce" / "seed0"
    assert Q._checkpoint_state(run / "weights" / "last.pt") == "resumable"
    first = json.loads((run / "epoch_times.json").read_text())
    assert list(first) == ["0"]
    res = Q.run_arm(out2, data, "bce", arm, budget, 0, opts, stats)
    times = json.loads((run / "epoch_times.json").read_text())
    assert sorted(times) == ["0", "1"] and times["0"] == first["0"]  # the first epoch was not trained again
    assert len((run / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert "resuming" in capsys.readouterr().out and res["fingerprint"]["epochs"] == 2


def test_update_page_replaces_only_the_marked_table(tmp_path):
    update_page = Q.update_page
    readme = tmp_path / "quality.md"
    readme.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\nafter\n")
    update_page(readme, "t", "| new |\n")
    assert readme.read_text() == "intro\n<!-- t:start -->\n| new |\n<!-- t:end -->\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(Q.ConfigError, match="expected one '<!-- t:start -->' line"):
        update_page(readme, "t", "x")


def test_cache_from_another_checkout_is_the_same_budget():
    """A result.json made in another clone names the project's model yaml by another absolute path; the
    cache is still the same budget (a session resumes from its archive in any checkout), another
    model is not."""
    here = {"model": str(Q.ROOT / "configs" / "models" / "defectdet-pico.yaml"), "imgsz": 320, "epochs": 30}
    there = {**here, "model": "/elsewhere/clone/configs/models/defectdet-pico.yaml"}
    assert Q.portable(here) == Q.portable(there) == {**here, "model": "configs/models/defectdet-pico.yaml"}
    assert Q.portable({**here, "model": "/elsewhere/configs/models/yolo11n.yaml"}) != Q.portable(here)
    assert Q.portable({**here, "model": "yolo11n.yaml"})["model"] == "yolo11n.yaml"


def test_a_folds_data_yaml_under_another_out_folder_is_the_same_fold():
    """bench/kfold.py writes each fold's data.yaml under --out: an archived fold made under another
    output folder (bench/quality.py's, or the curve's cell) is the same data; another fold is not."""
    a = {"model": "x.yaml", "data": "/work/bench_quality/kolektorsdd-data-kfold5/fold0/data.yaml"}
    b = {**a, "data": "/work/bench_curve/defectdet-pico-e30/kolektorsdd-data-kfold5/fold0/data.yaml"}
    assert (
        Q.portable(a) == Q.portable(b) and Q.portable(a)["data"] == "kolektorsdd-data-kfold5/fold0/data.yaml"
    )
    assert Q.portable({**a, "data": a["data"].replace("fold0", "fold1")}) != Q.portable(a)
    assert Q.portable({**a, "data": "../shared/data/kolektorsdd/data.yaml"})["data"].startswith("../shared")
