"""defectdet.part_rule: one threshold on the part score, a bootstrap confidence margin (worked numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from defectdet import metrics as M
from defectdet.errors import BadValue
from defectdet.part_rule import calibrate_part_threshold, check_confidence


def _scores(defect, clean, nc=2):
    """PartScores under the line's rule: each part's best score in class 0 (None = no detection)."""
    vals = [*defect, *clean]
    top = np.full((len(vals), nc), -np.inf)
    top[:, 0] = [-np.inf if v is None else v for v in vals]
    defective = np.array([True] * len(defect) + [False] * len(clean))
    return M.PartScores(hit=top.copy(), top=top, defective=defective)


def test_point_threshold_meets_the_target_at_the_midpoint():
    """10 defective parts 0.35..0.95 (step 0.1 at the top), clean 0.05 0.25 0.55. Target 10 %: one
    escape allowed -> the threshold sits just above 0.3 (the lowest defect) ... midway to 0.35's neighbour."""
    defect = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95]
    s = _scores(defect, [0.05, 0.25, 0.55])
    cal = calibrate_part_threshold(s, 0.10)
    # one escape allowed: threshold = 2nd lowest defect score (0.4), snapped to the gap below it:
    # (0.3 + 0.4) / 2
    assert cal.thresholds == pytest.approx([0.35, 0.35])
    assert cal.reachable and cal.allowed_escapes == 1
    assert (cal.kpis["escapes"], cal.kpis["overkills"]) == (1, 1)  # 0.3 escapes; clean 0.55 flagged
    cal0 = calibrate_part_threshold(s, 0.0)  # no escape allowed: under 0.3, above clean 0.25
    assert (
        cal0.thresholds[0] == pytest.approx(0.275)
        and cal0.kpis["escapes"] == 0
        and cal0.kpis["overkills"] == 1
    )


def test_confidence_lowers_the_threshold_deterministically():
    rng = np.random.default_rng(3)
    defect = list(rng.uniform(0.2, 1.0, 40))
    s = _scores(defect, list(rng.uniform(0.0, 0.6, 200)))
    point = calibrate_part_threshold(s, 0.05)
    bound = calibrate_part_threshold(s, 0.05, confidence=0.9)
    assert bound.thresholds[0] < point.thresholds[0]
    assert (
        bound.kpis["escapes"] <= point.kpis["escapes"] and bound.kpis["overkills"] >= point.kpis["overkills"]
    )
    assert np.array_equal(bound.thresholds, calibrate_part_threshold(s, 0.05, confidence=0.9).thresholds)
    # the bound: over resampled calibration sets, escape <= target holds for about 90 % at this threshold
    d = np.array(defect)
    boot = np.random.default_rng(7).choice(d, size=(4000, len(d)))
    held = np.mean((boot < bound.thresholds[0]).sum(1) <= 2)  # floor(0.05 * 40) = 2 escapes allowed
    assert held >= 0.88


def test_undetected_defects_make_the_target_unreachable():
    s = _scores([None, None, 0.6, 0.8], [0.1, 0.7])
    cal = calibrate_part_threshold(s, 0.25)  # one escape allowed, two parts can never be caught
    assert not cal.reachable and cal.kpis["escapes"] == 2
    assert cal.thresholds[0] <= 0.6  # every part that has a detection is caught


def test_one_threshold_for_every_class_and_bad_confidence():
    s = _scores([0.5, 0.9], [0.2], nc=3)
    assert len(set(calibrate_part_threshold(s, 0.0).thresholds)) == 1
    for bad in (0.2, 1.0, 1.5):
        with pytest.raises(BadValue, match=r"expected a number in \[0.5, 1\) \(a probability"):
            check_confidence(bad)
    assert check_confidence(None) is None and check_confidence(0.9) == 0.9


def test_binomial_tail_against_the_sum_of_terms():
    from math import comb

    from defectdet.part_rule import binomial_tail

    for n, p, k in [(35, 0.05, 1), (278, 0.05, 9), (20, 0.3, 7), (5, 0.5, 0), (5, 0.5, 6)]:
        want = sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1))
        assert binomial_tail(n, p, k) == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert binomial_tail(35, 0.05, 1) == pytest.approx(1 - 0.95**35)  # 0.834


def test_allowed_overkills_conformal_and_with_confidence():
    from defectdet.part_rule import allowed_overkills, binomial_tail

    # split conformal: (j + 1) / (n + 1) <= 5 %: n = 278 -> j + 1 <= 13.95 -> 12; n = 19 -> j + 1 <= 1 -> 0
    assert allowed_overkills(278, 0.05) == 12 and allowed_overkills(19, 0.05) == 0
    assert allowed_overkills(18, 0.05) == -1  # 1 / 19 > 5 %: not even the highest good part may be flagged
    # 90 % confidence: the largest j with P(Binomial(n, 0.05) >= j + 1) >= 0.9
    j = allowed_overkills(278, 0.05, 0.9)
    assert binomial_tail(278, 0.05, j + 1) >= 0.9 > binomial_tail(278, 0.05, j + 2)
    assert j == 8
    # 35 good parts: P(at least one of 35 above a 5 % quantile) = 0.834 < 0.9: no threshold meets it
    assert allowed_overkills(35, 0.05, 0.9) == -1 and allowed_overkills(45, 0.05, 0.9) == 0


def test_overkill_threshold_from_the_good_parts():
    from defectdet.part_rule import calibrate_overkill_threshold

    good = [i / 100 for i in range(40)]  # 0.00 .. 0.39, 40 good parts
    s = _scores([0.385, 0.5, None], good)
    # conformal 10 %: j + 1 <= 0.1 * 41 -> j = 3: flags 0.39 0.38 0.37, not 0.36
    cal = calibrate_overkill_threshold(s, 0.10)
    assert cal.allowed_overkills == 3 and cal.reachable
    assert cal.thresholds[0] > 0.36 and cal.thresholds[0] == pytest.approx(0.36)
    assert np.all(cal.thresholds == cal.thresholds[0])  # one threshold for every class
    assert (cal.kpis["overkills"], cal.kpis["escapes"]) == (3, 1)  # the undetected part escapes
    # too few good parts for 5 % at 90 %: unreachable, nothing good flagged, defects above still caught
    few = calibrate_overkill_threshold(s, 0.05, confidence=0.9)
    assert not few.reachable and few.kpis["overkills"] == 0 and few.thresholds[0] > 0.39
    assert few.kpis["escapes"] == 2  # 0.385 and the undetected part
    # more allowed than good parts with a detection: every detection rejects
    sparse = _scores([0.2], [None] * 30 + [0.05])
    allc = calibrate_overkill_threshold(sparse, 0.2)
    assert allc.thresholds[0] == pytest.approx(0.05) and allc.kpis["escapes"] == 0
    with pytest.raises(ValueError, match="target_overkill"):
        calibrate_overkill_threshold(s, 0.0)
