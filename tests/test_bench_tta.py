"""``defectdet val --tta/--tiles`` and ``bench/tta.py`` on a tiny synthetic set with the stand-in ONNX model
(the station's runtime path), and the .pt path through ultralytics' predictions."""

import json

import benchscripts
import numpy as np
import pytest

from defectdet.cli import main as defectdet


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return benchscripts.stand_in_model(tmp_path_factory.mktemp("model"), "conveyor96")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from defectdet.data.synthetic import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("synth"), images=16, defect_rate=0.5, imgsz=160, seed=3, video_frames=0
    )


def test_val_with_views_runs_the_runtime_and_records_them(model, data, tmp_path, capsys):
    out = tmp_path / "val"
    argv = ["val", "--model", str(model), "--data", str(data), "--out", str(out), "--conf", "0.05"]
    assert defectdet([*argv, "--tta", "hflip", "--tiles", "2x2", "--tile-overlap", "0.25"]) == 0
    rep = json.loads((out / "val_report.json").read_text())
    assert rep["views"] == {"tta": "hflip", "tiles": [2, 2], "tile_overlap": 0.25, "path": "onnxruntime"}
    assert rep["imgsz"] == [96, 96] and 0.0 <= rep["map50"] <= 1.0
    assert defectdet([*argv, "tta=hvflip"]) == 0  # the key=value form
    assert json.loads((out / "val_report.json").read_text())["views"]["tta"] == "hvflip"
    capsys.readouterr()
    for bad, message in (
        (["--tta", "vflip"], "--tta vflip: expected one of none, hflip, hvflip"),
        (["--tiles", "3by3"], "--tiles='3by3': expected null (off), native"),
        (["tile_overlap=2"], "tile_overlap=2: expected a number in [0, 0.9]"),
    ):
        assert defectdet([*argv, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_views_off_match_the_plain_runtime(model, data):
    """tta=none on the runtime path gives the Detector's own detections at the floor for every class."""
    from defectdet.evaluate import read_split
    from defectdet.evaluate_views import ViewDetector, read_image
    from defectdet.runtime import Detector

    names, images = read_split(data, "val")
    frame = read_image(images[0])
    with ViewDetector(model, len(names), conf=0.05) as views, Detector(model, conf=0.05) as det:
        det.thresholds = np.full(len(names), 0.05, np.float32)  # not the sidecar's
        a, b = views(frame), det(frame)
        assert (
            len(a) == len(b) > 0 and np.allclose(a.xyxy, b.xyxy) and np.allclose(a.confidence, b.confidence)
        )


def test_bench_tta_smoke_one_split_and_two_folds(model, data, tmp_path):
    bench = benchscripts.load("tta")
    from bench.kfold import make_fold_yamls

    page = tmp_path / "tta.md"
    page.write_text("# TTA\n<!-- tta-table:start -->\nSTALE\n<!-- tta-table:end -->\nafter\n")
    out = tmp_path / "tta.json"
    common = ["--out", str(out), "--timed", "1", "--repeats", "2", "--tiles", "2x2", "--page", str(page)]
    assert bench.main(["--weights", str(model), "--data", str(data), "--tag", "one", *common]) == 0
    folds = make_fold_yamls(str(data), 2, tmp_path / "folds")
    two = ["--weights", str(model), str(model), "--data", *folds, "--tag", "two", "--arms", "off", "both"]
    assert bench.main([*two, *common]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"one", "two"} and res["two"]["splits"] == 2
    for tag in res:
        arms = {a["arm"]: a for a in res[tag]["arms"]}
        want = {"off": 1, "hflip": 2, "tiles": 4, "both": 8} if tag == "one" else {"off": 1, "both": 8}
        assert {a: arms[a]["passes_per_frame"] for a in arms} == want
        for a in arms.values():
            assert a["fps"] > 0 and len(a["fps_passes"]) == 2 and 0 <= a["map50"] <= 1
            assert a["line"]["n_defective"] + a["line"]["n_clean"] == a["n_images"]
            assert a["good"]["n_defective"] + a["good"]["n_clean"] == a["n_images"]  # the good-part rule
    assert res["two"]["n_images"] == 16  # every image held out once over the two folds
    text = page.read_text()
    assert "STALE" not in text and text.endswith("<!-- tta-table:end -->\nafter\n")
    assert text.count("| one |") == 4 and text.count("| two |") == 2
    assert "median of 2 passes over 1 frames" in text and "{" not in text  # the note is filled in


def test_bench_tta_refuses_bad_options_in_one_line(model, data, tmp_path):
    bench = benchscripts.load("tta")
    from defectdet.errors import ConfigError

    with pytest.raises(ConfigError, match="one per split"):
        bench.main(["--weights", str(model), str(model), "--data", str(data)])
    with pytest.raises(ConfigError, match="--arms flip: expected one of"):
        bench.main(["--weights", str(model), "--data", str(data), "--arms", "flip"])
    with pytest.raises(ConfigError, match="no weights/last.pt"):
        bench.main(["--weights", str(tmp_path), "--data", str(data)])


def _ordered(det):
    rows = np.c_[det.xyxy, det.confidence, det.class_id]  # (N, 6)
    return rows[np.lexsort(np.round(rows, 1).T[::-1])]


@pytest.mark.slow
def test_pt_views_are_ultralytics_predictions_merged_the_same_way(tmp_path, data):
    """A .pt: tta=none equals defectdet val's own ultralytics path; hflip merges that and the mirror's."""
    pytest.importorskip("ultralytics")
    from defectdet.evaluate import collect_detections, read_split
    from defectdet.evaluate_views import ViewDetector, read_image
    from defectdet.runtime.tta import flip_image, merge_flips

    pt = (
        benchscripts.load("runtime")
        .make_model(tmp_path, 96, save_pt=True, logit_mean=-3.0)
        .with_suffix(".pt")
    )
    names, images = read_split(data, "val")
    plain = collect_detections(pt, images[:2], len(names), imgsz=96, conf=0.05)[0]
    with ViewDetector(pt, len(names), imgsz=96, conf=0.05) as off, ViewDetector(
        pt, len(names), "hflip", imgsz=96, conf=0.05
    ) as hflip:
        assert off.path == "ultralytics"
        for img, want in zip(images[:2], plain):
            frame = read_image(img)
            got = off(frame)
            assert len(got) == len(want.conf) and np.allclose(got.xyxy, want.boxes, atol=1e-2)
            mirror = off(flip_image(frame, "h"))
            merged = merge_flips([got, mirror], [None, "h"], frame.shape[:2], 0.7, 300)
            a, b = _ordered(hflip(frame)), _ordered(merged)  # ties of equal scores: any order
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-2)
