"""Pre/post-processing, Detections and tiling against their specification (no model, no framework)."""

import cv2
import numpy as np
import pytest

from defectdet.runtime import Detections
from defectdet.runtime.postprocess import (
    decode_xywh_cls,
    nms_cv2,
    nms_numpy,
    postprocess,
    scale_boxes,
)
from defectdet.runtime.preprocess import Preprocessor, as_bgr, letterbox, letterbox_params, to_chw
from defectdet.runtime.tiling import merge_tiles, tile_windows


# -- letterbox ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "orig, new, unpad, pads",
    [
        ((480, 640), (320, 320), (320, 240), (40, 40, 0, 0)),  # r = 0.5, dh = 80 split evenly
        ((480, 640), (640, 640), (640, 480), (80, 80, 0, 0)),  # r = 1
        ((100, 333), (128, 128), (128, 38), (45, 45, 0, 0)),  # r = 0.3844, h = round(38.44) = 38, dh/2 = 45
        (
            (101, 100),
            (128, 128),
            (127, 128),
            (0, 0, 0, 1),
        ),  # dw = 1: left = round(0.4) = 0, right = round(0.6) = 1
        (
            (50, 60),
            (128, 192),
            (154, 128),
            (0, 0, 19, 19),
        ),  # upscaling, rectangular input: r = min(2.56, 3.2)
    ],
)
def test_letterbox_params_worked_numbers(orig, new, unpad, pads):
    p = letterbox_params(orig, new)
    assert p.new_unpad == unpad
    assert (p.top, p.bottom, p.left, p.right) == pads
    assert p.top + p.bottom + unpad[1] == new[0] and p.left + p.right + unpad[0] == new[1]
    assert p.gain == (unpad[0] / orig[1], unpad[1] / orig[0])


def test_letterbox_image_pads_grey_and_keeps_content():
    frame = np.full((480, 640, 3), 200, np.uint8)
    img, p = letterbox(frame, (320, 320))
    assert img.shape == (320, 320, 3)
    assert (img[: p.top] == 114).all() and (img[320 - p.bottom :] == 114).all()
    assert (img[p.top : 320 - p.bottom] == 200).all()


def test_stretch_mode_has_no_padding():
    p = letterbox_params((480, 640), (320, 320), letterbox=False)
    assert (p.top, p.bottom, p.left, p.right) == (0, 0, 0, 0) and p.new_unpad == (320, 320)
    assert p.gain == (0.5, 320 / 480)


def test_to_chw_is_rgb_planes_divided_by_255_exactly():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    out = to_chw(img, np.empty((3, 16, 24), np.float32))
    expected = img[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(
        255
    )  # torch's .float().div_(255)
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    bgr = to_chw(img, np.empty((3, 16, 24), np.float32), rgb=False, scale=1.0)
    assert np.array_equal(bgr, img.transpose(2, 0, 1).astype(np.float32))


def test_preprocessor_batches_and_reuses_buffer():
    pre = Preprocessor((64, 96))
    frames = [np.zeros((30, 40, 3), np.uint8), np.full((90, 50), 255, np.uint8)]  # second one is grey
    batch, params = pre(frames)
    assert batch.shape == (2, 3, 64, 96) and batch.dtype == np.float32
    assert len(params) == 2 and params[1].orig_shape == (90, 50)
    again, _ = pre(frames[:1])
    assert np.shares_memory(again, batch)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8), "frame.png"])
def test_as_bgr_rejects_non_images(bad):
    with pytest.raises(ValueError, match="frame"):
        as_bgr(bad)


def test_as_bgr_converts_grey_and_bgra():
    assert as_bgr(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert as_bgr(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)


def test_scale_boxes_inverts_the_letterbox():
    p = letterbox_params((480, 640), (320, 320))
    frame_boxes = np.array([[100, 50, 300, 200], [0, 0, 640, 480]], np.float32)
    sx, sy = p.gain
    in_input = frame_boxes * np.array([sx, sy, sx, sy], np.float32) + np.array(
        [p.left, p.top] * 2, np.float32
    )
    back = scale_boxes(in_input.copy(), p)
    np.testing.assert_allclose(back, frame_boxes, atol=1e-3)
    clipped = scale_boxes(np.array([[-10, -10, 400, 400]], np.float32), p)
    assert clipped.min() >= 0 and clipped[0, 2] <= 640 and clipped[0, 3] <= 480


# -- decode, thresholds, NMS ----------------------------------------------------------------------
def _head(xywh, scores):
    """(4+nc, A) head output from per-anchor boxes (A, 4) and scores (A, nc)."""
    return np.concatenate([np.asarray(xywh, np.float32).T, np.asarray(scores, np.float32).T])


def test_decode_best_class_strict_threshold_and_xyxy():
    pred = _head(
        [[50, 50, 20, 10], [10, 10, 4, 4], [30, 30, 2, 2]],
        [[0.1, 0.8], [0.25, 0.0], [0.3, 0.2]],  # anchor 1 sits exactly on the threshold: dropped (strict >)
    )
    xyxy, conf, cls = decode_xywh_cls(pred, np.full(2, 0.25, np.float32))
    assert cls.tolist() == [1, 0]
    np.testing.assert_allclose(conf, [0.8, 0.3], rtol=1e-6)
    np.testing.assert_allclose(xyxy[0], [40, 45, 60, 55])


def test_per_class_thresholds_override_the_default():
    pred = _head([[5, 5, 2, 2], [9, 9, 2, 2]], [[0.5, 0.0], [0.0, 0.5]])
    thr = np.array([0.6, 0.25], np.float32)  # class 0 needs > 0.6 now
    _, _, cls = decode_xywh_cls(pred, thr)
    assert cls.tolist() == [1]


def _random_boxes(n, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    return (
        np.concatenate([xy, xy + wh], 1).astype(np.float32),
        rng.random(n).astype(np.float32),
        rng.integers(0, 3, n),
    )


def _iou(a, b):
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_nms_cv2_is_greedy_class_aware_and_matches_numpy():
    xyxy, conf, cls = _random_boxes(300)
    keep = nms_cv2(xyxy, conf, cls, 0.5)
    assert np.all(np.diff(conf[keep]) <= 0)  # highest confidence first
    for i, a in enumerate(keep):  # no kept pair of the same class overlaps above the threshold
        for b in keep[i + 1 :]:
            assert cls[a] != cls[b] or _iou(xyxy[a], xyxy[b]) <= 0.5
    dropped = np.setdiff1d(np.arange(300), keep)  # every dropped box is covered by a better kept one
    for d in dropped:
        assert any(cls[k] == cls[d] and conf[k] >= conf[d] and _iou(xyxy[k], xyxy[d]) > 0.5 for k in keep)
    assert sorted(keep.tolist()) == sorted(nms_numpy(xyxy, conf, cls, 0.5).tolist())


def test_nms_threshold_is_exclusive():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    conf, cls = np.array([0.9, 0.8], np.float32), np.zeros(2, int)
    assert len(nms_cv2(a, conf, cls, 0.5)) == 2 and len(nms_numpy(a, conf, cls, 0.5)) == 2
    assert len(nms_cv2(a, conf, cls, 0.49)) == 1


def test_ios_merges_a_box_inside_another_where_iou_does_not():
    boxes = np.array([[0, 0, 100, 100], [0, 0, 30, 100]], np.float32)  # IoU 0.3, IoS 1
    conf, cls = np.array([0.9, 0.8], np.float32), np.zeros(2, int)
    assert len(nms_numpy(boxes, conf, cls, 0.5, "iou")) == 2
    assert nms_numpy(boxes, conf, cls, 0.5, "ios").tolist() == [0]
    with pytest.raises(ValueError, match="iou"):
        nms_numpy(boxes, conf, cls, 0.5, "giou")


def test_postprocess_end_to_end_on_a_synthetic_head():
    p = letterbox_params((480, 640), (320, 320))
    pred = _head(
        [[160, 160, 40, 40], [161, 161, 40, 40], [100, 100, 10, 10], [250, 200, 20, 20]],
        [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.1, 0.1]],
    )
    det = postprocess(pred, p, np.full(2, 0.25, np.float32), {0: "scratch", 1: "spot"}, iou=0.7, max_det=300)
    assert det.class_name.tolist() == ["scratch", "spot"]  # the near-duplicate was suppressed
    np.testing.assert_allclose(det.xyxy[0], [(140 - 0) * 2, (140 - 40) * 2, 180 * 2, (180 - 40) * 2])
    assert len(postprocess(pred, p, np.full(2, 0.25, np.float32), {0: "a", 1: "b"}, max_det=1)) == 1


# -- Detections -----------------------------------------------------------------------------------
def test_detections_validates_shapes_and_values():
    ok = Detections.from_arrays(np.array([[0, 0, 5, 5]]), np.array([0.5]), np.array([1]), {1: "spot"})
    assert len(ok) == 1 and ok.class_name[0] == "spot" and ok.class_id.dtype == np.int32
    with pytest.raises(ValueError, match="xyxy"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2, int), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="confidence"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2, int), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="x2 >= x1"):
        Detections(np.array([[5, 0, 1, 1]]), np.array([0.5]), np.array([0]), np.array(["a"]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Detections(np.array([[0, 0, 1, 1]]), np.array([1.5]), np.array([0]), np.array(["a"]))


def test_detections_select_concat_and_records():
    d = Detections.from_arrays(
        np.array([[0, 0, 1, 1], [2, 2, 3, 3]]), np.array([0.2, 0.9]), np.array([0, 1]), {0: "a", 1: "b"}
    )
    assert d.sorted().class_name.tolist() == ["b", "a"]
    assert len(d[d.confidence > 0.5]) == 1 and len(d[0]) == 1
    assert len(Detections.concat([d, Detections.empty(), d])) == 4
    rec = d.to_list()[1]
    assert rec["class_name"] == "b" and rec["xyxy"] == [2.0, 2.0, 3.0, 3.0]


# -- tiling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, tiles, overlap",
    [((1080, 1920), (2, 3), 0.2), ((480, 640), (1, 1), 0.2), ((500, 701), (3, 2), 0.35)],
)
def test_tile_windows_cover_the_frame_with_the_requested_overlap(shape, tiles, overlap):
    wins = tile_windows(shape, tiles, overlap)
    assert len(wins) == tiles[0] * tiles[1]
    cover = np.zeros(shape, bool)
    for x0, y0, x1, y1 in wins:
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    if tiles[1] > 1:  # neighbours share ~overlap of a tile
        (a0, _, a1, _), (b0, _, _, _) = wins[0], wins[1]
        assert abs((a1 - b0) - overlap * (a1 - a0)) <= 1


def test_tile_windows_reject_bad_grids():
    with pytest.raises(ValueError, match="tiles"):
        tile_windows((100, 100), (0, 2))
    with pytest.raises(ValueError, match="overlap"):
        tile_windows((100, 100), (2, 2), overlap=1.0)


def test_merge_tiles_shifts_and_drops_border_cut_copies():
    wins = [(0, 0, 120, 100), (80, 0, 200, 100)]
    names = {0: "crack"}
    whole = Detections.from_arrays(
        np.array([[10, 10, 30, 30]]), np.array([0.9]), np.array([0]), names
    )  # in tile 2
    cut = Detections.from_arrays(
        np.array([[90, 10, 110, 30]]), np.array([0.6]), np.array([0]), names
    )  # in tile 1
    merged = merge_tiles([cut, whole], wins, thr=0.7)
    assert len(merged) == 1 and merged.confidence[0] == pytest.approx(0.9)
    np.testing.assert_allclose(merged.xyxy[0], [90, 10, 110, 30])
    apart = Detections.from_arrays(np.array([[0, 0, 5, 5]]), np.array([0.5]), np.array([0]), names)
    assert len(merge_tiles([apart, apart], wins, thr=0.7)) == 2  # (0..5) and (80..85) stay distinct


def test_letterbox_fills_the_input_and_centres_for_many_sizes():
    """Brute force over sizes: the pads always fill the input exactly and are centred within 1 px."""
    for h in range(37, 700, 53):
        for w in range(41, 900, 67):
            p = letterbox_params((h, w), (320, 256))
            img, _ = letterbox(np.zeros((h, w, 3), np.uint8), (320, 256))
            assert img.shape == (320, 256, 3)
            assert abs(p.top - p.bottom) <= 1 and abs(p.left - p.right) <= 1
            assert cv2.resize(np.zeros((h, w), np.uint8), p.new_unpad).shape == (
                p.new_unpad[1],
                p.new_unpad[0],
            )


def test_merge_tiles_never_suppresses_within_one_tile():
    names = {0: "crack"}
    nested = Detections.from_arrays(
        np.array([[0, 0, 100, 100], [10, 10, 20, 20]]), np.array([0.9, 0.8]), np.array([0, 0]), names
    )
    assert len(merge_tiles([nested], [(0, 0, 200, 200)], thr=0.5)) == 2  # IoS 1, but the same tile
    assert len(merge_tiles([nested[:1], nested[1:]], [(0, 0, 200, 200)] * 2, thr=0.5)) == 1  # different tiles


def test_postprocess_drops_inverted_boxes_of_nms_free_heads():
    p = letterbox_params((100, 100), (100, 100))
    pred = np.array(
        [[10, 10, 20, 20, 0.9, 0], [30, 30, 25, 40, 0.8, 1], [5, 5, 6, 6, 0.1, 1]], np.float32
    )  # (N, 6)
    det = postprocess(pred, p, np.full(2, 0.25, np.float32), {0: "a", 1: "b"}, end2end=True)
    assert det.class_name.tolist() == ["a"]  # row 2 has x2 < x1, row 3 is below conf


def test_postprocess_clips_float32_sigmoid_overshoot():
    """A float32 sigmoid can give 1.0000001; Detections only accepts probabilities in [0, 1]."""
    over = np.nextafter(np.float32(1.0), np.float32(2.0))
    pred = _head([[50, 50, 20, 10]], [[float(over), 0.0]]).astype(np.float32)
    assert pred.max() > 1.0
    params = letterbox_params((100, 100), (100, 100))
    dets = postprocess(pred, params, np.full(2, 0.25, np.float32), {0: "a", 1: "b"})
    assert len(dets) == 1 and dets.confidence[0] == 1.0


def test_preprocessor_canvas_matches_letterbox_across_frame_sizes():
    """The reused letterbox canvas gives letterbox()'s pixels, also when the frame size changes."""
    rng = np.random.default_rng(0)
    pre = Preprocessor((96, 128))
    for h, w in [(60, 80), (60, 80), (120, 40), (96, 128), (30, 200), (60, 80)]:
        frame = rng.integers(0, 256, (h, w, 3), np.uint8)
        img, p = letterbox(frame, (96, 128))
        batch, params = pre([frame])
        assert params == [p]
        assert np.array_equal(batch[0], to_chw(img, np.empty((3, 96, 128), np.float32)))
