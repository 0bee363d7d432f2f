"""OK/NG decisions: per-class thresholds (strict >), thresholds YAML, region of interest, k-of-n debounce."""

import numpy as np
import pytest

from defectdet.errors import ConfigError, DefectdetError
from defectdet.runtime.detections import Detections
from defectdet.station.decisions import Decider, parse_roi

NAMES = {0: "scratch", 1: "spot", 2: "crack", 3: "dent"}


def dets(*rows):
    """rows of (x1, y1, x2, y2, conf, cls)."""
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float32)
    return Detections.from_arrays(a[:, :4], a[:, 4], a[:, 5].astype(int), NAMES)


SHAPE = (100, 200, 3)  # H, W, C


def test_per_class_thresholds_strictly_above():
    d = Decider(NAMES, conf=0.5, thresholds={"spot": 0.8, 2: 0.1})
    assert d.thresholds.tolist() == pytest.approx([0.5, 0.8, 0.1, 0.5])
    frame = dets(
        (0, 0, 10, 10, 0.5, 0), (0, 0, 10, 10, 0.79, 1), (0, 0, 10, 10, 0.11, 2), (0, 0, 10, 10, 0.51, 3)
    )
    kept = d.defects(frame, SHAPE)
    assert kept.class_name.tolist() == [
        "crack",
        "dent",
    ]  # scratch at exactly 0.5 and spot below 0.8 do not count
    assert d(frame, SHAPE).ng
    assert not d(dets((0, 0, 10, 10, 0.5, 0)), SHAPE).ng


def test_thresholds_from_the_quality_yaml(tmp_path):
    y = tmp_path / "thresholds.yaml"
    y.write_text("thresholds:\n  scratch: 0.9\n  dent: 0.2\n")
    d = Decider(NAMES, conf=0.4, thresholds=y)
    assert d.thresholds.tolist() == pytest.approx([0.9, 0.4, 0.4, 0.2])
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds:\n  bubble: 0.5\n")
    with pytest.raises(DefectdetError, match="bad.yaml: threshold for unknown class 'bubble'"):
        Decider(NAMES, thresholds=bad)


def test_threshold_vector_from_the_detector():
    d = Decider(NAMES, thresholds=np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    assert d.thresholds.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ConfigError, match="expected 4 values"):
        Decider(NAMES, thresholds=np.array([0.1, 0.2]))


def test_roi_rectangle_in_fractions_counts_box_centres():
    d = Decider(NAMES, roi=[0.5, 0.0, 1.0, 1.0])  # right half of a 200x100 frame: x >= 100
    inside = (90, 10, 130, 20, 0.9, 0)  # centre x = 110
    outside = (60, 10, 130, 20, 0.9, 1)  # centre x = 95, though the box reaches into the ROI
    kept = d.defects(dets(inside, outside), SHAPE)
    assert kept.class_name.tolist() == ["scratch"]
    assert not d(dets(outside), SHAPE).ng
    # the same fractional ROI scales with the frame: on a 400-wide frame the border is x = 200
    assert not d(dets(inside), (100, 400, 3)).ng


def test_roi_polygon_in_pixels():
    tri = [[0, 0], [100, 0], [0, 100]]
    d = Decider(NAMES, roi=tri, roi_units="pixels")
    assert d(dets((10, 10, 20, 20, 0.9, 0)), SHAPE).ng  # centre (15, 15)
    assert not d(dets((60, 60, 80, 80, 0.9, 0)), SHAPE).ng  # centre (70, 70): beyond the hypotenuse


@pytest.mark.parametrize(
    "roi, units, message",
    [
        ([0.5, 0.5, 0.2, 0.9], "fraction", "x2 > x1"),
        ([0, 0, 2, 2], "fraction", "fractions must lie in [0, 1]"),
        ([[0, 0], [1, 1]], "pixels", "at least 3"),
        ([0, 0, 1, 1], "percent", "expected 'fraction' or 'pixels'"),
    ],
)
def test_bad_roi_is_a_config_error(roi, units, message):
    with pytest.raises(ConfigError) as e:
        parse_roi(roi, units)
    assert message in str(e.value)


def test_debounce_k_of_n():
    d = Decider(NAMES, debounce_k=2, debounce_n=3)
    hit, miss = dets((0, 0, 5, 5, 0.9, 0)), dets()
    seq = [hit, miss, hit, miss, miss, hit, hit, hit, miss, miss, miss]
    got = [d(x, SHAPE) for x in seq]
    raw = [len(x) > 0 for x in seq]
    expected = [
        sum(raw[max(0, i - 2) : i + 1]) >= 2 for i in range(len(seq))
    ]  # k of the last n, this one included
    assert (
        [g.ng for g in got]
        == expected
        == [False, False, True, False, False, False, True, True, True, False, False]
    )
    assert [g.raw_ng for g in got] == raw
    rising = [g.ng and not (i and got[i - 1].ng) for i, g in enumerate(got)]
    assert [g.rising for g in got] == rising
    assert sum(g.rising for g in got) == 2


def test_no_debounce_every_frame_decides_alone():
    d = Decider(NAMES)
    hit, miss = dets((0, 0, 5, 5, 0.9, 0)), dets()
    assert [d(x, SHAPE).label for x in (hit, hit, miss, hit)] == ["NG", "NG", "OK", "NG"]
    with pytest.raises(ConfigError, match="1 <= k <= n"):
        Decider(NAMES, debounce_k=3, debounce_n=2)
