"""Parity: ``Detector(model.onnx)`` == ultralytics ``YOLO(model.onnx).predict`` on the same frames.

Same boxes within 1 px, same classes, confidences within 1e-4, same count. The model is a
yolo11n built from yaml with random weights whose BatchNorm statistics and class logits are
calibrated on synthetic parts (``bench/runtime.py: make_model``) — an untrained yolo11n emits one
constant score (~0.003) everywhere, which would make the comparison vacuous; this one gives
tens to hundreds of boxes of all classes per frame, so NMS is exercised hard.
"""

import shutil
from pathlib import Path

import benchscripts
import cv2
import numpy as np
import pytest

from defectdet.runtime import Detections, Detector, MetadataError

ROOT = Path(__file__).resolve().parents[1]
DEEPPCB = ROOT.parent / "shared" / "data" / "deeppcb"


def _bench():
    return benchscripts.load("runtime")


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def model(bench, tmp_path_factory):
    """Square 160 input, 4 classes, many boxes per frame."""
    return bench.make_model(tmp_path_factory.mktemp("m160"), 160, logit_mean=-3.0, logit_std=1.5)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Synthetic set images (square), conveyor frames (640x480), odd sizes (letterbox rounding)."""
    from defectdet.data.synthetic import conveyor_frame, make_dataset

    data = make_dataset(
        tmp_path_factory.mktemp("synth"), images=10, defect_rate=0.5, imgsz=200, seed=1, video_frames=0
    )
    imgs = [cv2.imread(str(p)) for p in sorted((data.parent / "images").rglob("*.png"))][:6]
    conveyor = [conveyor_frame(0, i)[0] for i in (3, 11, 17, 30)]
    odd = [
        conveyor[0][:333, :517].copy(),
        cv2.resize(imgs[0], (1001, 97)),
        np.ascontiguousarray(conveyor[1][::-1]),
    ]
    return imgs + conveyor + odd


def _ultralytics(model_path):
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics import YOLO

    return YOLO(str(model_path), task="detect")


def assert_same(ours: Detections, theirs: Detections, where: str = "") -> None:
    """Same count; after sorting both the same way: classes equal, boxes within 1 px, conf within 1e-4."""
    assert len(ours) == len(theirs), f"{where}: {len(ours)} vs {len(theirs)} detections"

    def order(d):
        return np.lexsort((d.xyxy[:, 1], d.xyxy[:, 0], -np.round(d.confidence, 4)))

    a, b = ours[order(ours)], theirs[order(theirs)]
    assert np.array_equal(a.class_id, b.class_id), where
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1.0, rtol=0, err_msg=where)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4, rtol=0, err_msg=where)


def _theirs(result) -> Detections:
    """ultralytics' detections minus inverted boxes (x2 < x1), which the runtime drops by design."""
    boxes = result.boxes
    xyxy, conf, cls = (x.cpu().numpy() for x in (boxes.xyxy, boxes.conf, boxes.cls))
    ok = (xyxy[:, 2] >= xyxy[:, 0]) & (xyxy[:, 3] >= xyxy[:, 1])
    conf = np.clip(conf, 0.0, 1.0)  # float32 sigmoid: 1.0000001 happens
    return Detections.from_arrays(xyxy[ok], conf[ok], cls[ok], dict(result.names))


def _compare(model_path, frames, conf, iou=0.7, **det_kw):
    yolo = _ultralytics(model_path)
    total = 0
    with Detector(model_path, conf=conf, iou=iou, **det_kw) as det:
        for i, f in enumerate(frames):
            ours = det(f)
            r = yolo.predict(f, conf=conf, iou=iou, imgsz=list(det.imgsz), verbose=False)[0]
            assert_same(ours, _theirs(r), f"frame {i} {f.shape} conf={conf}")
            total += len(ours)
    return total


@pytest.mark.parametrize("conf", [0.05, 0.25])
def test_parity_with_ultralytics_predict(model, frames, conf):
    total = _compare(model, frames, conf)
    assert total >= len(frames)  # not vacuous: detections on (on average) every frame


def test_parity_rectangular_input(bench, frames, tmp_path):
    rect = bench.make_model(tmp_path, (128, 192), logit_mean=-3.0, logit_std=1.5, seed=3)
    assert _compare(rect, frames, 0.1) >= len(frames)


def test_per_class_thresholds_equal_filtering_ultralytics_output(model, frames):
    """A class's higher threshold == its lower boxes dropped after NMS (lower boxes never suppress higher)."""
    thr = {0: 0.5, 2: 0.15}
    yolo = _ultralytics(model)
    with Detector(model, conf=0.25, thresholds={"scratch": 0.5, "crack": 0.15}) as det:
        for f in frames[:6]:
            r = Detections.from_ultralytics(
                yolo.predict(f, conf=0.15, iou=0.7, imgsz=list(det.imgsz), verbose=False)[0]
            )
            need = np.array([thr.get(int(c), 0.25) for c in r.class_id], np.float32)
            assert_same(det(f), r[r.confidence > need])


def test_letterbox_is_bit_identical_to_ultralytics(frames):
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics.data.augment import LetterBox

    from defectdet.runtime.preprocess import letterbox

    for shape in [(160, 160), (128, 192), (320, 256)]:
        for f in frames:
            ours, _ = letterbox(f, shape)
            assert np.array_equal(ours, LetterBox(shape, auto=False, stride=32)(image=f)), (shape, f.shape)


def test_embedded_metadata_alone_is_enough(model, frames, tmp_path):
    """Without the sidecar, names/imgsz come from ultralytics' metadata_props; results are identical."""
    bare = tmp_path / "bare.onnx"
    shutil.copy(model, bare)
    with Detector(model, conf=0.1) as a, Detector(bare, conf=0.1) as b:
        assert b.names == a.names == {0: "scratch", 1: "spot", 2: "crack", 3: "dent"}
        for f in frames[:4]:
            assert_same(a(f), b(f))


def test_metadata_that_does_not_fit_the_model_is_refused(model, tmp_path, bench):
    wrong = tmp_path / "wrong.onnx"
    shutil.copy(model, wrong)
    bench.write_card(wrong, ["a", "b"], 160)  # 2 classes, the model has 4
    with pytest.raises(MetadataError, match="2 class names need output"):
        Detector(wrong)
    bench.write_card(wrong, ["a", "b", "c", "d"], 320)
    with pytest.raises(MetadataError, match="imgsz"):
        Detector(wrong)


def test_infer_batch_equals_one_by_one(model, frames):
    with Detector(model, conf=0.1) as det:
        batch = det.infer_batch(frames[:5])
        assert len(batch) == 5 and det.timings.infer > 0
        for f, d in zip(frames[:5], batch):
            assert_same(det(f), d)
        assert det.infer_batch([]) == []


def test_stream_equals_one_by_one_and_overlaps_the_next_letterbox(model, frames):
    """stream() gives each frame's own Detections in order, and letterboxes frame n+1 while the model
    runs frame n (recorded: the pre of n+1 starts before forward(n) returns)."""
    import threading
    import time

    with Detector(model, conf=0.1) as det:
        want = [det(f) for f in frames]
        got = list(det.stream(iter(frames)))
        assert len(got) == len(want) and sum(len(w) for w in want) > 0
        for a, b in zip(got, want):
            assert_same(a, b)
        assert det.timings.infer > 0 and det.timings.pre > 0
        assert list(det.stream([])) == []

        log, forward, new_pre = [], det.forward, det.new_preprocessor

        def slow_forward(batch):
            log.append(("forward start", threading.current_thread().name))
            time.sleep(0.05)
            out = forward(batch)
            log.append(("forward end", threading.current_thread().name))
            return out

        def recording_pre():
            pre = new_pre()

            def run(fs):
                log.append(("pre start", threading.current_thread().name))
                return pre(fs)

            return run

        det.forward, det.new_preprocessor = slow_forward, recording_pre
        again = list(det.stream(frames[:4]))
        assert [len(a) for a in again] == [len(w) for w in want[:4]]
        events = [e for e, _ in log]
        assert events.index("pre start", 1) < events.index(
            "forward end"
        )  # frame 1 letterboxed during forward(0)
        assert all(name.startswith("detector-pre") for e, name in log if e == "pre start")
        assert all(not name.startswith("detector-pre") for e, name in log if e.startswith("forward"))


def test_tiling_a_mosaic_equals_detecting_each_tile(model, frames):
    """A 2x2 mosaic of four 640x480 frames with tiles=(2, 2), overlap=0: each tile is one frame."""
    quads = frames[6:10]
    mosaic = np.vstack([np.hstack(quads[:2]), np.hstack(quads[2:])])  # (960, 1280, 3)
    with Detector(model, conf=0.1) as plain, Detector(model, conf=0.1, tiles=(2, 2), overlap=0.0) as tiled:
        expected = []
        for q, (dx, dy) in zip(quads, [(0, 0), (640, 0), (0, 480), (640, 480)]):
            d = plain(q)
            expected.append(
                Detections(d.xyxy + np.float32([dx, dy, dx, dy]), d.confidence, d.class_id, d.class_name)
            )
        got = tiled(mosaic)
        assert len(got) > 0
        assert_same(got, Detections.concat(expected))
        assert tiled.timings.infer > 0


def test_tiling_with_overlap_returns_a_merged_subset_of_the_tiles(model, frames):
    """With overlap, each kept box is a tile's detection shifted into the frame; tiles' duplicates go."""
    from defectdet.runtime.tiling import tile_windows

    big = cv2.resize(frames[7], (1920, 1080))
    wins = tile_windows(big.shape[:2], (2, 3), 0.25)
    with Detector(model, conf=0.1) as plain, Detector(model, conf=0.1, tiles=(2, 3), overlap=0.25) as tiled:
        got = tiled(big)
        pool = []
        for x0, y0, x1, y1 in wins:
            d = plain(big[y0:y1, x0:x1])
            pool.append(np.c_[d.xyxy + np.float32([x0, y0, x0, y0]), d.confidence, d.class_id])
    pool = np.concatenate(pool)  # (M, 6)
    assert 0 < len(got) < len(pool)  # something found, something merged away
    rows = np.c_[got.xyxy, got.confidence, got.class_id]
    for r in rows:
        assert np.any(np.all(np.abs(pool - r) <= [1e-3] * 4 + [1e-6, 0], axis=1)), r


def test_contract_with_defectdet_export(bench, frames, tmp_path):
    """What ``defectdet export`` writes (sidecar + metadata_props) is what the runtime reads."""
    export = pytest.importorskip("defectdet.export.onnx", reason="defectdet.export.onnx not available")
    src = bench.make_model(tmp_path / "src", 160, logit_mean=-3.0, logit_std=1.5, save_pt=True)
    result = export.export_onnx(
        src.with_suffix(".pt"), imgsz=160, out=tmp_path / "out" / "model.onnx", check_parity=False
    )
    with Detector(result.onnx) as det:
        assert det.metadata.source == str(result.sidecar)
        assert det.names == {0: "scratch", 1: "spot", 2: "crack", 3: "dent"} and det.imgsz == (160, 160)
    assert _compare(result.onnx, frames[:6], 0.1) > 0
    result.sidecar.unlink()  # embedded metadata alone (ultralytics' keys + the defectdet entry)
    with Detector(result.onnx) as det:
        assert det.names[3] == "dent" and det.metadata.strides == (8, 16, 32)


@pytest.mark.slow
def test_parity_nms_free_head(bench, frames, tmp_path):
    """YOLO26 exports an end-to-end (1, 300, 6) head: no NMS, conf filter and max_det only."""
    e2e = bench.make_model(tmp_path, 160, cfg="yolo26n.yaml", logit_mean=-3.0, logit_std=1.5)
    with Detector(e2e) as det:
        assert det.metadata.end2end
    assert _compare(e2e, frames, 0.1) > 0


@pytest.mark.slow
@pytest.mark.skipif(not (DEEPPCB / "data.yaml").is_file(), reason=f"DeepPCB not present at {DEEPPCB}")
def test_parity_on_deeppcb_val(bench, tmp_path):
    names = ["open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"]
    pcb = bench.make_model(tmp_path, 320, names=names, logit_mean=-3.5, logit_std=1.5)
    files = sorted((DEEPPCB / "images" / "val").glob("*"))[:24]
    imgs = [cv2.imread(str(p)) for p in files]
    assert len(imgs) == 24 and all(i is not None for i in imgs)
    assert _compare(pcb, imgs, 0.05) > 0
    assert _compare(pcb, imgs, 0.25) > 0


@pytest.fixture(scope="module")
def uint8_models(bench, tmp_path_factory):
    """One checkpoint's float export and its uint8-input exports (NHWC and NCHW), via ``defectdet export``."""
    export = pytest.importorskip("defectdet.export.onnx", reason="defectdet.export.onnx not available")
    root = tmp_path_factory.mktemp("u8")
    src = bench.make_model(root / "src", 160, logit_mean=-3.0, logit_std=1.5, save_pt=True)
    ckpt = src.with_suffix(".pt")
    kw = {
        "imgsz": 160,
        "check_parity": False,
    }  # export parity is test_export_onnx's; this compares detections
    fp = export.export_onnx(ckpt, out=root / "fp" / "model.onnx", **kw).onnx
    u8 = {
        lay: export.export_onnx(
            ckpt, out=root / lay / "model.onnx", input_dtype="uint8", input_layout=lay, **kw
        ).onnx
        for lay in ("NHWC", "NCHW")
    }
    return fp, u8


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_uint8_input_model_matches_ultralytics_on_the_float_model(uint8_models, frames, layout):
    """The uint8 graph in the Detector == ultralytics predict on the float graph of the same checkpoint."""
    fp, u8 = uint8_models
    yolo = _ultralytics(fp)
    total = 0
    with Detector(u8[layout], conf=0.05) as det:
        assert det.metadata.preprocess.dtype == "uint8" and det.metadata.preprocess.layout == layout
        assert det.backend.input_spec().dtype == np.uint8
        for i, f in enumerate(frames):
            ours = det(f)
            assert_same(
                ours,
                _theirs(yolo.predict(f, conf=0.05, iou=0.7, imgsz=[160, 160], verbose=False)[0]),
                f"frame {i}",
            )
            total += len(ours)
    assert total >= len(frames)


def test_uint8_nhwc_input_is_the_letterboxed_frame_itself(uint8_models, frames):
    """The NHWC uint8 batch is the letterboxed BGR frame in one reused buffer; stages agree with __call__."""
    from defectdet.runtime.preprocess import letterbox

    with Detector(uint8_models[1]["NHWC"], conf=0.05) as det:
        pre = det.new_preprocessor()
        for f in frames[6:9]:
            batch, params = pre([f])
            assert batch.dtype == np.uint8 and batch.shape == (1, 160, 160, 3)
            assert np.array_equal(batch[0], letterbox(f, (160, 160))[0])
            assert_same(det.decode(det.forward(batch)[0], params[0]), det(f))
        again, _ = pre([frames[6]])
        assert np.shares_memory(again, batch)  # no per-frame allocation
