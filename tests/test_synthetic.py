"""Synthetic rare-defect data: deterministic, rare, small, valid YOLO, and a readable conveyor video."""

import json

import cv2
import numpy as np
import pytest

from defectdet.cli import main
from defectdet.data.synthetic import CLASSES, conveyor_frame, make_dataset, make_image


def _labels(root, split):
    return {p.stem: p.read_text() for p in sorted((root / "labels" / split).glob("*.txt"))}


def test_dataset_is_rare_stratified_valid_and_deterministic(tmp_path):
    a = make_dataset(tmp_path / "a", images=50, defect_rate=0.1, imgsz=96, seed=5, video_frames=0)
    b = make_dataset(tmp_path / "b", images=50, defect_rate=0.1, imgsz=96, seed=5, video_frames=0)
    c = make_dataset(tmp_path / "c", images=50, defect_rate=0.1, imgsz=96, seed=6, video_frames=0)
    ra, rb, rc = a.parent, b.parent, c.parent
    for split in ("train", "val"):
        assert _labels(ra, split) == _labels(rb, split)
        for name in list(_labels(ra, split))[:5]:
            assert (ra / "images" / split / f"{name}.png").read_bytes() == (
                rb / "images" / split / f"{name}.png"
            ).read_bytes()
    assert _labels(ra, "train") != _labels(rc, "train")
    train, val = _labels(ra, "train"), _labels(ra, "val")
    assert len(train) + len(val) == 50 and len(val) == 10
    defective = [t for t in {**train, **val}.values() if t]
    assert len(defective) == 5  # exactly round(50 * 0.1)
    assert sum(1 for t in val.values() if t) == 1  # stratified: val keeps the rate
    for text in defective:
        for line in text.splitlines():
            c, x, y, w, h = line.split()
            assert 0 <= int(c) < len(CLASSES)
            assert all(0 <= float(v) <= 1 for v in (x, y, w, h))
            assert float(w) * float(h) < 0.1  # small defects
    from defectdet.data.validate import check_dataset

    report = check_dataset(a)
    assert report.ok, report.summary()


def test_image_generation_independent_of_order_and_boxes_cover_the_defect():
    img1, boxes1 = make_image(0, 7, 128, True)
    make_image(0, 3, 128, True)
    img2, boxes2 = make_image(0, 7, 128, True)
    assert np.array_equal(img1, img2) and boxes1 == boxes2 and len(boxes1) >= 1
    clean, none = make_image(0, 7, 128, False)
    assert none == []
    diff = (
        np.abs(img1.astype(int) - clean.astype(int)).max(axis=2) > 25
    )  # where the defect changed the surface
    ys, xs = np.nonzero(diff)
    assert len(xs) > 0
    inside = np.zeros_like(diff)
    for _, x, y, w, h in boxes1:
        inside[
            int((y - h / 2) * 128) : int(np.ceil((y + h / 2) * 128)),
            int((x - w / 2) * 128) : int(np.ceil((x + w / 2) * 128)),
        ] = True
    assert inside[diff].mean() > 0.95


def test_defect_scale_grows_defects():
    small = [b for i in range(40) for b in make_image(1, i, 128, True)[1]]
    big = [b for i in range(40) for b in make_image(1, i, 128, True, defect_scale=2.5)[1]]
    assert np.median([w * h for *_, w, h in big]) > 3 * np.median([w * h for *_, w, h in small])


def test_cli_writes_dataset_and_conveyor_video(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--images", "20", "--imgsz", "64", "--video-frames", "30"]) == 0
    assert "wrote 20 parts (2 defective, 18 good)" in capsys.readouterr().out
    truth = json.loads((out / "parts.json").read_text())
    cap = cv2.VideoCapture(str(out / "parts.mp4"))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (480, 480, 3)  # square camera framed on the inspection station
        frames += 1
    cap.release()
    assert frames == truth["frames"] == 30
    assert set(truth["ng_frames"]) <= set(truth["in_position_frames"])
    # 24 frames a part: 8 sliding in, 8 at rest under the camera, 8 sliding out; part 1 is still sliding in at
    # 29
    assert truth["in_position_frames"] == list(range(8, 16))


def test_conveyor_ground_truth_matches_frames():
    seen_defective = False
    for f in range(48):
        frame, info = conveyor_frame(0, f, defect_rate=0.5)
        again, _ = conveyor_frame(0, f, defect_rate=0.5)
        assert np.array_equal(frame, again)
        assert info["in_position"] == (8 <= f % 24 < 16) and (info["in_view"] or not info["in_position"])
        if info["defective"] and info["in_view"]:
            seen_defective = True
            for _, x0, y0, x1, y1 in info["boxes"]:
                assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert seen_defective


@pytest.mark.parametrize(
    "kwargs, match", [({"images": 1}, "at least 2"), ({"defect_rate": 1.5}, r"\[0, 1\]")]
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(tmp_path, **{"images": 10, **kwargs})


def test_conveyor_part_drawn_at_training_size_is_scaled_up():
    frame, info = conveyor_frame(0, 10, width=480, height=480, part_imgsz=160, defect_rate=1.0)
    part, _ = make_image(1, 0, 160, True)
    assert info["in_position"] and frame.shape == (480, 480, 3)
    small = cv2.resize(frame, (160, 160), interpolation=cv2.INTER_AREA)
    assert (
        np.abs(small.astype(int) - part.astype(int)).mean() < 6
    )  # the camera sees the part at its own scale
