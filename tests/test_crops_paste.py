"""Native-resolution windows and defect copy-paste, as pure functions: exact boxes, the image's own
boxes kept, determinism per seed, errors for bad values."""

import numpy as np
import pytest

from defectdet.data import crops as C
from defectdet.data import paste as P
from defectdet.errors import ConfigError


# ----------------------------------------------------------------------------- windows
def test_crop_boxes_shifts_clips_and_drops_slivers_exactly():
    boxes = np.array(
        [
            [110, 120, 130, 150],  # inside the window: shifted by (100, 100)
            [90, 150, 120, 170],  # 2/3 inside: clipped to x >= 0
            [395, 100, 420, 120],  # 5 of 25 px wide inside: 20% < 30%, dropped
            [600, 600, 610, 610],
        ]
    )  # outside
    out, keep = C.crop_boxes(boxes, (100, 100, 300, 300), min_visible=0.3)
    assert keep.tolist() == [0, 1]
    assert np.array_equal(out, [[10, 20, 30, 50], [0, 50, 20, 70]])


def test_centred_windows_hold_a_whole_box_and_stay_inside_the_image():
    rng = np.random.default_rng(0)
    boxes = np.array([[500.0, 40, 540, 70]])
    for _ in range(200):
        x0, y0, w, h = C.choose_window((480, 640), boxes, 320, rng, centred_share=1.0)
        assert (w, h) == (320, 320) and 0 <= x0 <= 320 and 0 <= y0 <= 160
        assert x0 <= 500 and x0 + w >= 540 and y0 <= 40 and y0 + h >= 70


def test_window_of_a_small_image_is_the_whole_image():
    assert C.choose_window((200, 300), np.zeros((0, 4)), 320, np.random.default_rng(0)) == (0, 0, 300, 200)


def test_native_window_cuts_the_pixels_the_boxes_point_at():
    rng = np.random.default_rng(1)
    img = np.zeros((640, 640, 3), np.uint8)
    img[300:310, 200:220] = 255  # the defect
    crop, boxes, keep, (x0, y0, _, _) = C.native_window(
        img, np.array([[200.0, 300, 220, 310]]), 320, rng, 1.0
    )
    assert crop.shape == (320, 320, 3) and keep.tolist() == [0]
    x1, y1, x2, y2 = boxes[0].astype(int)
    assert (
        (x1, y1) == (200 - x0, 300 - y0) and crop[y1:y2, x1:x2].min() == 255 and crop.sum() == 255 * 3 * 200
    )


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_quarter_turns_move_boxes_with_the_pixels(k):
    img = np.zeros((120, 200, 3), np.uint8)
    boxes = np.array(
        [[10.0, 20, 50, 35], [150, 90, 200, 120]]
    )  # the second touches the right and bottom edges
    for x1, y1, x2, y2 in boxes.astype(int):
        img[y1:y2, x1:x2] = 255
    out, turned = C.rotate90(img, boxes, k)
    assert out.shape == ((120, 200, 3) if k % 2 == 0 else (200, 120, 3)) and out.flags["C_CONTIGUOUS"]
    for x1, y1, x2, y2 in turned:
        assert x1 >= 0 and y1 >= 0 and x2 <= out.shape[1] and y2 <= out.shape[0]
        assert out[int(y1) : int(y2), int(x1) : int(x2)].min() == 255  # the box covers its defect's pixels...
    assert out.sum() == img.sum() == 255 * 3 * (40 * 15 + 50 * 30)  # ...and nothing else moved in or out
    ys, xs = np.nonzero(out[..., 0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(turned.min(0)[:2]) + tuple(
        turned.max(0)[2:]
    )


def test_one_quarter_turn_by_the_formula():
    _, b = C.rotate90(np.zeros((100, 200, 3), np.uint8), np.array([[10.0, 20, 50, 35]]), 1)
    assert b.tolist() == [[20.0, 150.0, 35.0, 190.0]]  # (y1, W - x2, y2, W - x1), W = 200


@pytest.mark.parametrize("p", [-0.1, 1.5, "half", True])
def test_bad_rot90_values(p):
    with pytest.raises(ConfigError, match=r"rot90=.*expected a number in \[0, 1\] \(a probability"):
        P.check_probability("rot90", p)


def test_native_size_rounds_up_to_the_stride():
    assert C.native_size(np.array([[600, 630], [480, 640]]), 32, 320) == 640
    assert C.native_size(np.array([[100, 150]]), 32, 320) == 320


# ----------------------------------------------------------------------------- paste
def _bank():
    src = np.full((200, 200, 3), 40, np.uint8)
    src[50:60, 70:90] = 250  # a bright defect of class 2
    return P.DefectBank.from_images([src], [np.array([[70.0, 50, 90, 60]])], [np.array([2])], margin=0.5)


def test_bank_cuts_box_plus_margin_and_measures_sizes():
    bank = _bank()
    (p,) = bank.patches
    assert p.cls == 2 and p.image.shape == (30, 40, 3)  # margin 0.5 x 20 = 10 px around 20 x 10
    assert np.array_equal(p.box, [10, 10, 30, 20]) and bank.size_range == {2: (0.1, 0.1)}


def test_paste_adds_correct_boxes_and_keeps_the_original_ones():
    bank = _bank()
    img = np.full((200, 200, 3), 40, np.uint8)
    own = np.array([[10.0, 10, 40, 40]])
    img[10:40, 10:40] = 7
    out, added, cls = P.paste_defects(img, own, bank, np.random.default_rng(0), max_n=3)
    assert len(added) >= 1 and cls.tolist() == [2] * len(added)
    assert np.array_equal(img[10:40, 10:40], out[10:40, 10:40])  # the image's own defect untouched
    for x1, y1, x2, y2 in added:
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 200
        assert not (x1 < 40 and x2 > 10 and y1 < 40 and y2 > 10)  # no overlap with an existing box
        inner = out[int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
        assert inner.min() > 200  # the box holds the pasted defect (size range keeps it 20 x 10 px)
        assert x2 - x1 == pytest.approx(20, abs=0.5) and y2 - y1 == pytest.approx(10, abs=0.5)
    assert (out != img).any() and img[10:40, 10:40].max() == 7  # the input was not modified


def test_paste_is_deterministic_per_seed():
    bank, img = _bank(), np.full((200, 200, 3), 40, np.uint8)
    a = P.paste_defects(img, np.zeros((0, 4)), bank, np.random.default_rng(5))
    b = P.paste_defects(img, np.zeros((0, 4)), bank, np.random.default_rng(5))
    c = P.paste_defects(img, np.zeros((0, 4)), bank, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_paste_respects_the_roi():
    bank, img = _bank(), np.full((200, 200, 3), 40, np.uint8)
    roi = np.zeros((100, 100), bool)
    roi[:, 50:] = True  # parts only on the right half (the mask is scaled to the image)
    for seed in range(20):
        _, added, _ = P.paste_defects(img, np.zeros((0, 4)), bank, np.random.default_rng(seed), roi=roi)
        assert all((b[0] + b[2]) / 2 >= 100 for b in added)


@pytest.mark.parametrize(
    "p, n, match",
    [
        (2, None, r"paste=2: expected a number in \[0, 1\] \(a probability"),
        ("yes", None, r"paste='yes'"),
        (0.5, 0, r"paste_max=0: expected an integer >= 1"),
    ],
)
def test_bad_paste_values(p, n, match):
    with pytest.raises(ConfigError, match=match):
        P.check_paste(p, n)


def test_bank_needs_labelled_defects(tmp_path):
    with pytest.raises(ConfigError, match="no labelled defect to copy"):
        P.DefectBank.from_files([], [], [])


def test_a_defect_from_another_surface_is_not_pasted():
    bank = _bank()  # a bright defect on a dark (40) surface
    bright = np.full((200, 200, 3), 230, np.uint8)  # a bright surface: every margin differs by ~190 levels
    out, added, cls = P.paste_defects(bright, np.zeros((0, 4)), bank, np.random.default_rng(0))
    assert len(added) == 0 and np.array_equal(out, bright)
    out, added, _ = P.paste_defects(bright, np.zeros((0, 4)), bank, np.random.default_rng(0), max_cost=255)
    assert len(added) >= 1  # without the limit it would have been pasted
