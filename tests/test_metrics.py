"""defectdet.metrics against hand-computed cases, ultralytics' own AP, and calibration cases whose
answer is known (brute force or by construction)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from defectdet import metrics as M

NEG = -np.inf


def _img(boxes=(), conf=(), cls=(), gt_boxes=(), gt_cls=(), name=""):
    return M.ImageDetections(boxes=boxes, conf=conf, cls=cls, gt_boxes=gt_boxes, gt_cls=gt_cls, name=name)


def _stats(correct50, conf, cls, n_gt):
    """BoxStats with the same correctness at every IoU threshold (hand cases are IoU-independent)."""
    correct = np.repeat(np.asarray(correct50, dtype=bool)[:, None], len(M.IOU_THRESHOLDS), 1)  # (D, T)
    return M.BoxStats(
        correct=correct, conf=np.asarray(conf, float), cls=np.asarray(cls), n_gt=np.asarray(n_gt)
    )


# ----------------------------------------------------------------------------- boxes
def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    iou = M.box_iou(a, b)
    assert iou.shape == (1, 4)
    # overlap 5x10=50, union 100+100-50=150; identical; disjoint; zero-area box
    np.testing.assert_allclose(iou[0], [50 / 150, 1.0, 0.0, 0.0])


def test_match_greedy_by_confidence_class_aware_and_per_iou_threshold():
    gt = [[0, 0, 10, 10]]
    # given out of confidence order: the 0.9 duplicate must win the ground truth, not the 0.8 one
    im = _img(
        boxes=[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]],
        conf=[0.8, 0.9, 0.95],
        cls=[0, 0, 1],  # the 0.95 box is the wrong class
        gt_boxes=gt,
        gt_cls=[0],
    )
    correct = M.match_detections(im)
    assert correct.shape == (3, 10)
    assert correct[1].all() and not correct[0].any() and not correct[2].any()
    # IoU 0.64 (box 10x6.4 inside a 10x10 ground truth): true at 0.50, 0.55, 0.60 only
    partial = M.match_detections(_img(boxes=[[0, 0, 10, 6.4]], conf=[0.5], cls=[0], gt_boxes=gt, gt_cls=[0]))
    assert partial[0].tolist() == [True] * 3 + [False] * 7


def test_match_claims_the_best_iou_target():
    # one detection overlapping two ground truths: it takes the one with the higher IoU (0.8 > 0.5)
    im = _img(
        boxes=[[0, 0, 10, 10], [0, 0, 10, 10]],
        conf=[0.9, 0.8],
        cls=[0, 0],
        gt_boxes=[[0, 0, 10, 5], [0, 0, 10, 8]],
        gt_cls=[0, 0],
    )
    correct = M.match_detections(im, iou_thresholds=[0.5, 0.7])
    # first claims the 0.8 target (true at both); the second gets the 0.5 one (true at 0.5 only)
    assert correct.tolist() == [[True, True], [True, False]]


def test_correct_any_ignores_claims():
    im = _img(boxes=[[0, 0, 10, 10]] * 2, conf=[0.9, 0.8], cls=[0, 0], gt_boxes=[[0, 0, 10, 10]], gt_cls=[0])
    assert M.correct_any(im).tolist() == [True, True]
    assert M.match_detections(im)[:, 0].tolist() == [True, False]


# ----------------------------------------------------------------------------- AP
def test_ap_hand_computed():
    # class 0, 3 labels; detections TP 0.9, FP 0.8, TP 0.7 -> recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3.
    # envelope on the 101-point grid: 1 for r <= 0.33 (34 points), 2/3 for 0.34..0.66 (33), 0 after.
    # trapezoid: 0.01 * (34 + 33 * 2/3 - 1/2) = 0.555
    stats = _stats([1, 0, 1], [0.9, 0.8, 0.7], [0, 0, 0], [3])
    ap, pr = M.ap_per_class(stats)
    assert ap[0, 0] == pytest.approx(0.555, abs=1e-12)
    assert pr[0, 33] == 1.0 and pr[0, 34] == pytest.approx(2 / 3) and pr[0, 67] == 0.0


def test_ap_perfect_detector_is_ultralytics_0995():
    # a single correct detection: the envelope is 1 up to r=1 where the sentinel drops to 0 -> 1 - 0.005
    ap, _ = M.ap_per_class(_stats([1], [0.9], [0], [1]))
    assert ap[0, 0] == pytest.approx(0.995)


def test_map_skips_classes_without_labels_and_counts_missed_ones_as_zero():
    # class 0 perfect, class 1 labelled but never detected, class 2 no labels (only a false positive)
    stats = _stats([1, 0], [0.9, 0.5], [0, 2], [1, 2, 0])
    ap, _ = M.ap_per_class(stats)
    map50, map50_95 = M.mean_ap(ap, stats.n_gt)
    assert map50 == pytest.approx(0.995 / 2) and map50_95 == pytest.approx(0.995 / 2)
    assert M.mean_ap(ap, np.zeros(3)) == (0.0, 0.0)


def test_ap_equals_ultralytics_ap_per_class_on_random_detections():
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics.utils.metrics import ap_per_class as ul_ap_per_class

    rng = np.random.default_rng(0)
    d, nc = 400, 3
    stats = M.BoxStats(
        correct=np.sort(rng.random((d, 10)) < 0.5, axis=1)[:, ::-1],  # (D, 10) monotone in IoU threshold
        conf=rng.random(d),
        cls=rng.integers(0, nc, d),
        n_gt=np.array([150, 90, 60]),
    )
    target_cls = np.repeat(np.arange(nc), stats.n_gt)
    ours, _ = M.ap_per_class(stats)
    theirs = ul_ap_per_class(stats.correct.astype(float), stats.conf, stats.cls, target_cls)[5]  # (nc, 10)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


def test_pr_at_thresholds_and_max_f1():
    stats = _stats([1, 0, 1], [0.9, 0.8, 0.7], [0, 0, 0], [3, 0])
    p, r = M.pr_at_thresholds(stats, np.array([0.75, 0.5]))
    assert p[0] == pytest.approx(0.5) and r[0] == pytest.approx(1 / 3)  # keeps 0.9 (TP) and 0.8 (FP)
    assert p[1] == 0.0 and r[1] == 0.0
    # F1 per prefix: 1/2, 2/5, 2/3 -> the 0.7 detection; class 1 has no labels -> the default
    np.testing.assert_allclose(M.max_f1_thresholds(stats, default=0.25), [0.7, 0.25])


# ----------------------------------------------------------------------------- parts
def test_part_scores_and_kpis():
    gt = [[0, 0, 10, 10]]
    images = [
        # defective: a correct 0.6 box and a wrong-class 0.9 box on the defect
        _img([[0, 0, 10, 10], [0, 0, 10, 10]], [0.6, 0.9], [0, 1], gt, [0]),
        # defective: a right-class box in the wrong place (IoU 0) -> never caught
        _img([[50, 50, 60, 60]], [0.95], [0], gt, [0]),
        _img([[0, 0, 5, 5]], [0.3], [1]),  # clean, one 0.3 box
        _img(),  # clean, nothing
    ]
    s = M.PartScores.from_images(images, nc=2)
    np.testing.assert_array_equal(s.hit, [[0.6, NEG], [NEG, NEG], [NEG, NEG], [NEG, NEG]])
    np.testing.assert_array_equal(s.top, [[0.6, 0.9], [0.95, NEG], [NEG, 0.3], [NEG, NEG]])
    assert s.defective.tolist() == [True, True, False, False]
    k = M.part_kpis(s, np.array([0.5, 0.5]))
    assert (k["escapes"], k["overkills"], k["n_defective"], k["n_clean"]) == (1, 0, 2, 2)
    assert k["escape_rate"] == 0.5 and k["overkill_rate"] == 0.0
    k = M.part_kpis(s, np.array([0.7, 0.2]))  # the wrong-class 0.9 box does not save the first part
    assert (k["escapes"], k["overkills"]) == (2, 1)
    line = M.PartScores.from_images(images, nc=2, rule="any")  # the line rejects on any detection
    np.testing.assert_array_equal(line.hit, s.top)
    k = M.part_kpis(line, np.array([0.7, 0.2]))  # the wrong-class box and the misplaced one reject both parts
    assert (k["escapes"], k["overkills"]) == (0, 1)
    k = M.part_kpis(line, np.array([0.96, 0.95]))
    assert (k["escapes"], k["overkills"]) == (2, 0)
    with pytest.raises(ValueError, match="escape rule 'strict': expected one of box, any"):
        M.PartScores.from_images(images, nc=2, rule="strict")


def _scores(hit, top, defective):
    return M.PartScores(
        hit=np.asarray(hit, float), top=np.asarray(top, float), defective=np.asarray(defective)
    )


def test_calibration_one_class_known_answer():
    # defective best correct scores 0.9 0.8 0.4 0.2; clean best scores 0.85 0.5 0.3 0.1
    hit = [[0.9], [0.8], [0.4], [0.2], [NEG], [NEG], [NEG], [NEG]]
    top = [[0.9], [0.8], [0.4], [0.2], [0.85], [0.5], [0.3], [0.1]]
    s = _scores(hit, top, [True] * 4 + [False] * 4)
    # 25% of 4 -> one escape allowed: the highest threshold catching 3 is 0.4 -> 2 overkills
    # (0.85, 0.5); snapped into the gap (0.3, 0.4] -> 0.35
    cal = M.calibrate_thresholds(s, np.array([0.95]), 0.25)
    assert cal.reachable and cal.allowed_escapes == 1
    assert cal.thresholds[0] == pytest.approx(0.35)
    assert (cal.kpis["escapes"], cal.kpis["overkills"]) == (1, 2)
    # zero escapes: threshold in (0.1, 0.2] -> 3 overkills, snapped to 0.15
    cal = M.calibrate_thresholds(s, np.array([0.95]), 0.0)
    assert cal.thresholds[0] == pytest.approx(0.15) and (cal.kpis["escapes"], cal.kpis["overkills"]) == (0, 3)


def test_calibration_prefers_the_class_that_costs_no_overkill():
    # parts 0,1 escape at the start (0.9, 0.9). Lowering A to 0.3 would cost 3 overkills; B to 0.6 costs none
    hit = [[0.3, 0.6], [NEG, 0.7], [0.95, NEG], [NEG, NEG], [NEG, NEG], [NEG, NEG], [NEG, NEG]]
    top = [[0.3, 0.6], [NEG, 0.7], [0.95, NEG], [0.5, NEG], [0.45, NEG], [0.4, 0.2], [NEG, NEG]]
    s = _scores(hit, top, [True, True, True, False, False, False, False])
    cal = M.calibrate_thresholds(s, np.array([0.9, 0.9]), 0.0)
    assert cal.reachable and (cal.kpis["escapes"], cal.kpis["overkills"]) == (0, 0)
    # B: gap (0.2, 0.6] -> 0.4; A stays in its gap (0.5, 0.95] -> 0.725
    np.testing.assert_allclose(cal.thresholds, [0.725, 0.4])


def test_calibration_raises_low_thresholds_to_cut_overkill_up_to_the_best_hit():
    hit = [[0.9], [0.8], [NEG], [NEG]]
    top = [[0.9], [0.8], [0.5], [0.3]]
    s = _scores(hit, top, [True, True, False, False])
    cal = M.calibrate_thresholds(s, np.array([0.05]), 0.0)
    assert (cal.kpis["escapes"], cal.kpis["overkills"]) == (0, 0)
    assert cal.thresholds[0] == pytest.approx(0.65)  # gap (0.5, 0.8]
    # the ceiling: B's only correct detection is 0.7, a clean part has B at 0.8. Switching B off
    # would be free on this set (A catches the part) but is refused
    s2 = _scores([[0.9, 0.7], [NEG, NEG]], [[0.9, 0.7], [0.1, 0.8]], [True, False])
    cal2 = M.calibrate_thresholds(s2, np.array([0.5, 0.5]), 0.0)
    assert cal2.thresholds[1] <= 0.7 and cal2.kpis["overkills"] == 1


def test_calibration_unreachable_reports_and_keeps_the_minimum_escapes():
    # part 1 has no correct detection at any confidence
    s = _scores([[0.8], [NEG], [NEG]], [[0.8], [0.9], [0.5]], [True, True, False])
    cal = M.calibrate_thresholds(s, np.array([0.95]), 0.0)
    assert not cal.reachable and cal.allowed_escapes == 0
    assert (cal.kpis["escapes"], cal.kpis["overkills"]) == (1, 0)  # not lowered below what helps
    assert 0.5 < cal.thresholds[0] <= 0.8


def test_calibration_single_class_matches_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(20):
        n_def, n_clean = rng.integers(3, 15), rng.integers(3, 15)
        hit = np.where(rng.random(n_def) < 0.85, rng.random(n_def), NEG)
        clean = np.where(rng.random(n_clean) < 0.8, rng.random(n_clean), NEG)
        s = _scores(
            np.r_[hit, [NEG] * n_clean][:, None],
            np.r_[hit, clean][:, None],
            np.r_[[True] * n_def, [False] * n_clean],
        )
        target = [0.0, 0.1, 0.3][trial % 3]
        cal = M.calibrate_thresholds(s, np.array([1.0]), target)
        allowed = int(np.floor(target * n_def + 1e-9))
        feasible = [
            M.part_kpis(s, np.array([t]))
            for t in np.r_[hit, clean, 1.0, 2.0]
            if M.part_kpis(s, np.array([t]))["escapes"] <= max(allowed, int((hit == NEG).sum()))
        ]
        best = min(k["overkills"] for k in feasible)
        assert cal.kpis["overkills"] == best, trial
        assert cal.reachable == ((hit == NEG).sum() <= allowed)


def test_calibration_multi_class_meets_target_and_no_single_raise_helps():
    rng = np.random.default_rng(2)
    nc, n_def, n_clean = 3, 30, 30
    hit = np.where(rng.random((n_def, nc)) < 0.5, rng.random((n_def, nc)), NEG)
    hit[:, 0] = np.maximum(hit[:, 0], 0.05)  # every part reachable through class 0
    clean = np.where(rng.random((n_clean, nc)) < 0.6, rng.random((n_clean, nc)) * 0.7, NEG)
    s = _scores(
        np.r_[hit, np.full((n_clean, nc), NEG)], np.r_[hit, clean], np.r_[[True] * n_def, [False] * n_clean]
    )
    start = np.full(nc, 0.8)
    cal = M.calibrate_thresholds(s, start, 0.1)
    assert cal.reachable and cal.kpis["escapes"] <= 3
    ceiling = np.maximum(start, hit.max(0))
    for c, v in itertools.product(range(nc), np.r_[clean.ravel(), hit.ravel()]):
        t = cal.thresholds.copy()
        t[c] = np.nextafter(v, np.inf)
        if t[c] > cal.thresholds[c] and t[c] <= ceiling[c]:
            k = M.part_kpis(s, t)
            assert not (k["escapes"] <= 3 and k["overkills"] < cal.kpis["overkills"]), (c, v)


def test_calibration_rejects_bad_target():
    s = _scores([[0.5]], [[0.5]], [True])
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="target_escape"):
            M.calibrate_thresholds(s, np.array([0.5]), bad)


def test_metrics_imports_numpy_only():
    import subprocess
    import sys

    code = (
        "import sys, defectdet.metrics; "
        "print(sorted(m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
