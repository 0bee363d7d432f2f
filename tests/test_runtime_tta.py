"""Test-time views (defectdet/runtime/tta.py): flips un-flip exactly, passes merge by class-aware NMS, a
box seen in one pass survives with its score, tiles x flips compose, bad keys are one-line errors, and
the Detector and ``defectdet inspect`` run them."""

import benchscripts
import cv2
import numpy as np
import pytest

from defectdet.errors import BadValue, ConfigError
from defectdet.runtime import Detections
from defectdet.runtime.tta import (
    check_overlap,
    check_tta,
    detect_views,
    flip_image,
    merge_flips,
    native_grid,
    parse_tiles,
    unflip,
    windows_for,
)

NAMES = np.array(["scratch", "spot"])


def _det(boxes, conf, cls=None):
    cls = np.zeros(len(boxes), int) if cls is None else cls
    return Detections.from_arrays(np.array(boxes, np.float32).reshape(-1, 4), np.array(conf), cls, NAMES)


def blobs(image: np.ndarray) -> Detections:
    """A stand-in detector with exact boxes: every bright blob, class 1 when its red channel is set; the
    score grows with the blob's area (a blob cut by a tile border scores less than the whole one)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats((image.max(axis=2) > 128).astype(np.uint8))
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    boxes = np.stack([x, y, x + w, y + h], 1).astype(np.float32)  # pixel edges
    cls = (image[y, x, 2] > 128).astype(int) if n > 1 else np.zeros(0, int)
    return _det(boxes, np.clip(0.3 + area / 400.0, 0, 1), cls).sorted()


def predict_blobs(views):
    return [blobs(v) for v in views]


def _frame(h=240, w=320):
    img = np.zeros((h, w, 3), np.uint8)
    for x0, y0, s, red in (
        (15, 20, 12, 0),
        (140, 30, 9, 1),
        (250, 170, 14, 0),
        (60, 200, 10, 1),
        (300, 5, 8, 0),
        (180, 120, 14, 0),  # cut by the first tile column's right edge (x 188) in the 2x2 grid below
    ):
        img[y0 : y0 + s, x0 : x0 + s] = (255, 255, 255) if red else (255, 255, 0)
    return img


def _rows(det: Detections) -> list:
    return sorted(
        (tuple(np.round(b, 3)), int(c), round(float(s), 5))
        for b, c, s in zip(det.xyxy, det.class_id, det.confidence)
    )


@pytest.mark.parametrize("code", ["h", "v"])
def test_a_flipped_images_detections_unflip_to_the_original_boxes(code):
    img = _frame()
    plain = blobs(img)
    assert len(plain) == 6
    mirrored = blobs(flip_image(img, code))
    assert _rows(mirrored) != _rows(plain)  # the flip moved the boxes
    assert _rows(unflip(mirrored, code, img.shape[:2])) == _rows(plain)


def test_unflip_worked_numbers():
    det = _det([[10, 20, 30, 60]], [0.9])
    assert unflip(det, "h", (100, 200)).xyxy.tolist() == [[170, 20, 190, 60]]  # x -> 200 - x
    assert unflip(det, "v", (100, 200)).xyxy.tolist() == [[10, 40, 30, 80]]  # y -> 100 - y
    assert unflip(det, None, (100, 200)) is det


@pytest.mark.parametrize("tta", ["hflip", "hvflip"])
def test_flips_merge_the_duplicates_of_every_pass_into_the_plain_result(tta):
    img = _frame()
    calls = []

    def predict(views):
        calls.append(len(views))
        return predict_blobs(views)

    merged = detect_views(img, predict, tta=tta, input_hw=(320, 320))
    assert calls == [2 if tta == "hflip" else 3]  # every view in one call
    assert _rows(merged) == _rows(blobs(img))  # each blob once, at its own box and score


def test_a_box_seen_in_one_pass_only_keeps_its_box_and_score():
    shape = (100, 200)
    plain = _det([[10, 10, 30, 30]], [0.8])  # A
    mirrored = _det([[171, 11, 189, 31], [20, 50, 40, 70]], [0.6, 0.4])  # A (mirrored, a bit off) and B
    merged = merge_flips([plain, mirrored], [None, "h"], shape, iou=0.5)
    assert _rows(merged) == [((10, 10, 30, 30), 0, 0.8), ((160, 50, 180, 70), 0, 0.4)]


def test_merge_is_class_aware_and_keeps_the_higher_score():
    same_box = [[10, 10, 30, 30]]
    a, b = _det(same_box, [0.5], [0]), _det([[170, 10, 190, 30]], [0.7], [1])
    assert len(merge_flips([a, b], [None, "h"], (100, 200), iou=0.5)) == 2  # two classes: both stay
    c = _det([[170, 10, 190, 30]], [0.7], [0])
    merged = merge_flips([a, c], [None, "h"], (100, 200), iou=0.5)
    assert _rows(merged) == [((10, 10, 30, 30), 0, 0.7)]  # the mirror's box: it scored higher


def test_tiles_and_flips_compose():
    img = _frame()
    seen = []

    def predict(views):
        seen.append([v.shape for v in views])
        return predict_blobs(views)

    merged = detect_views(img, predict, tta="hvflip", tiles=(2, 2), overlap=0.3, input_hw=(320, 320))
    assert len(seen) == 1 and len(seen[0]) == 2 * 2 * 3  # tiles x flips, one batch
    assert _rows(merged) == _rows(blobs(img))  # every blob once, whole, at its frame position
    tiled_only = detect_views(img, predict, tiles=(2, 2), overlap=0.3, input_hw=(320, 320))
    assert _rows(tiled_only) == _rows(merged)


def test_native_windows_are_the_model_input_size_and_cover_the_frame():
    assert native_grid((500, 1250), (320, 320), 0.2) == (2, 5)  # KolektorSDD at 320
    wins = windows_for((500, 1250), "native", 0.2, (320, 320))
    assert len(wins) == 10 and all((x1 - x0, y1 - y0) == (320, 320) for x0, y0, x1, y1 in wins)
    assert {w[0] for w in wins} == {0, 232, 465, 698, 930} and {w[1] for w in wins} == {0, 180}
    xs = sorted({(w[0], w[2]) for w in wins})
    assert all(b[0] < a[1] - 0.2 * 320 for a, b in zip(xs, xs[1:]))  # neighbours share >= overlap
    assert windows_for((300, 200), "native", 0.2, (320, 320)) == [(0, 0, 200, 300)]  # smaller: whole
    assert windows_for((500, 1250), None, 0.2, (320, 320)) == [(0, 0, 1250, 500)]


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (False, None),
        ("off", None),
        ("1x1", None),
        ("native", "native"),
        ("2x3", (2, 3)),
        ("2X3", (2, 3)),
        ([2, 3], (2, 3)),
        ((4, 1), (4, 1)),
    ],
)
def test_tiles_values(value, expected):
    assert parse_tiles(value) == expected


@pytest.mark.parametrize("bad", ["2by3", "0x2", "2x", [2], [2, 0], [True, 2], 3, "x", [2.5, 2]])
def test_bad_tiles_are_one_line_errors_naming_the_key(bad):
    with pytest.raises(BadValue, match=r"^tiles=.*expected null \(off\), native") as e:
        parse_tiles(bad)
    assert "\n" not in str(e.value)


def test_bad_tta_and_overlap_are_one_line_errors_naming_the_key():
    assert check_tta(None) == check_tta(False) == check_tta("off") == "none"
    with pytest.raises(BadValue, match=r"^tta='vflip': expected one of none, hflip, hvflip$"):
        check_tta("vflip")
    with pytest.raises(BadValue, match=r"^--tile-overlap=0.95: expected a fraction"):
        check_overlap(0.95, "--tile-overlap")
    assert issubclass(BadValue, ConfigError)


def test_detector_checks_its_view_settings_before_loading(tmp_path):
    from defectdet.runtime import Detector

    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the settings fail first")
    for kwargs, key in (
        ({"tta": "flip"}, "tta="),
        ({"tiles": "2by2"}, "tiles="),
        ({"overlap": 1.5}, "overlap="),
    ):
        with pytest.raises(BadValue, match=f"^{key}"):
            Detector(model, **kwargs)


# ------------------------------------------------------------------ the Detector on a real model
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return benchscripts.stand_in_model(tmp_path_factory.mktemp("model"), "conveyor96")


def test_detector_flips_and_tiles_run_the_same_merge_as_the_views(model):
    from defectdet.data.synthetic import conveyor_frame
    from defectdet.runtime import Detector

    frame = conveyor_frame(0, 11)[0]
    with Detector(model, conf=0.1) as plain, Detector(model, conf=0.1, tta="hflip") as flipping:
        assert not flipping.stageable and plain.stageable
        want = merge_flips(
            [plain(frame), plain(flip_image(frame, "h"))],
            [None, "h"],
            frame.shape[:2],
            plain.iou,
            plain.max_det,
        )
        assert len(want) > 0 and _rows(flipping(frame)) == _rows(want)
        assert [len(d) for d in flipping.stream([frame, frame])] == [len(want)] * 2
        assert flipping.timings.total > 0
    with Detector(model, conf=0.1) as plain, Detector(model, conf=0.1, tta="hvflip", tiles="2x2") as both:
        want = detect_views(
            frame, plain.infer_batch, "hvflip", (2, 2), 0.2, plain.imgsz, plain.iou, plain.max_det
        )
        assert _rows(both(frame)) == _rows(want)
        assert "tta=hvflip" in repr(both) and "tiles=(2, 2)" in repr(both)


def test_inspect_reads_the_view_keys(model, tmp_path, monkeypatch):
    """``tta`` / ``tiles`` / ``tile_overlap`` reach the Detector and the run's info; bad ones are one line."""
    import json

    from defectdet.cli import main
    from defectdet.runtime import Detector

    made = []

    class Recording(Detector):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr("defectdet.runtime.Detector", Recording)
    out = tmp_path / "run"
    argv = ["inspect", "--model", str(model), "--source", "synthetic://?frames=3", "--out", str(out)]
    assert main([*argv, "tta=hflip", "tiles=2x3", "tile_overlap=0.25", "snapshots.enabled=false"]) == 0
    det = made[0]
    assert (det.tta, det.tiles, det.overlap) == ("hflip", (2, 3), 0.25)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("tta=vflip", "tta='vflip': expected one of none, hflip, hvflip"),
        ("tiles=2by2", "tiles='2by2': expected null (off), native"),
        ("tile_overlap=1.5", "tile_overlap=1.5: expected a number in [0, 0.9]"),
    ],
)
def test_inspect_bad_view_keys_are_one_line_errors(model, tmp_path, capsys, override, message):
    from defectdet.cli import main

    argv = [
        "inspect",
        "--model",
        str(model),
        "--source",
        "synthetic://?frames=1",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*argv, override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
