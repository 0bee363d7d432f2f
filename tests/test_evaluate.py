"""defectdet.evaluate: dataset reading, the report and its files, the thresholds YAML, the CLI, and
one end-to-end run of a tiny model as .pt, FP32 .onnx and INT8 Q/DQ .onnx through the same path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from defectdet import cli as dd_cli
from defectdet import evaluate as E
from defectdet import metrics as M
from defectdet.data.formats import label_path
from defectdet.errors import ConfigError, DataError, DefectdetError

DEEPPCB = Path(__file__).resolve().parents[2] / "shared" / "data" / "deeppcb"
NAMES = ["scratch", "spot"]


# ----------------------------------------------------------------------------- fixtures
def _write_dataset(root: Path, n_val: int = 8, imgsz: int = 128) -> Path:
    """Half the parts carry one big rectangle defect (class alternating), half are clean."""
    import cv2

    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img = np.full((imgsz, imgsz, 3), 60, np.uint8)
            lines = []
            if i % 2 == 0:
                c = (i // 2) % 2
                x, y = rng.integers(5, 30, 2)
                w, h = rng.integers(60, 90, 2)
                cv2.rectangle(
                    img,
                    (int(x), int(y)),
                    (int(x + w), int(y + h)),
                    (255, 255, 255) if c == 0 else (0, 0, 255),
                    -1,
                )
                lines.append(
                    f"{c} {(x + w / 2) / imgsz:.6f} {(y + h / 2) / imgsz:.6f} {w / imgsz:.6f} {h / imgsz:.6f}"
                )
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), img)
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines))
    data = root / "data.yaml"  # relative path: resolves against the yaml's folder, not the cwd
    data.write_text(
        yaml.safe_dump(
            {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(NAMES))}
        )
    )
    return data


def _tiny_models(out: Path, data: Path) -> dict[str, Path]:
    """An untrained yolo11n (2 classes) with batch-norm statistics taken from the images, so its
    scores vary per box instead of sitting at the bias; saved as .pt, exported to ONNX and INT8 Q/DQ."""
    import cv2
    import torch

    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    net = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    files = sorted((data.parent / "images" / "val").glob("*.png"))
    ims = torch.stack(
        [torch.from_numpy(cv2.imread(str(f))[:, :, ::-1].transpose(2, 0, 1).copy()) for f in files]
    )
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass below
    net.train()
    with torch.no_grad():
        net(ims.float() / 255)  # (B, 3, 128, 128)
        for seq in net.model[-1].cv3:
            seq[-1].bias.fill_(-1.0)
    net.eval()
    yolo = YOLO("yolo11n.yaml")
    yolo.model = net
    yolo.model.names = dict(enumerate(NAMES))
    pt = out / "tiny.pt"
    yolo.save(pt)
    onnx_path = Path(YOLO(pt).export(format="onnx", imgsz=128, simplify=False, dynamic=False, verbose=False))
    return {"pt": pt, "onnx": onnx_path, "int8": _quantize(onnx_path, files)}


def _quantize(onnx_path: Path, files: list[Path]) -> Path:
    """INT8 Q/DQ the TensorRT way: symmetric per-channel, Q/DQ on conv inputs only."""
    import cv2
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            arrays = [
                cv2.imread(str(f))[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
                for f in files
            ]
            self.it = iter({"images": np.ascontiguousarray(a)} for a in arrays)  # (1, 3, 128, 128)

        def get_next(self):
            return next(self.it, None)

    ops = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
    out = onnx_path.with_name("tiny_int8.onnx")
    quantize_static(
        str(onnx_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=ops,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": ops,
        },
    )
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalds")
    data = _write_dataset(root / "ds")
    return {"data": data, **_tiny_models(root, data)}


def _constructed_images() -> list[M.ImageDetections]:
    gt = [[0, 0, 10, 10]]
    return [
        M.ImageDetections([[0, 0, 10, 10]], [0.9], [0], gt, [0], name="a.png"),  # caught at 0.9
        M.ImageDetections([[0, 0, 10, 10], [0, 0, 9, 9]], [0.4, 0.2], [1, 0], gt, [1], name="b.png"),
        M.ImageDetections([[0, 0, 10, 10]], [0.3], [0], np.zeros((0, 4)), [], name="c.png"),  # clean, 0.3
        M.ImageDetections(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [], name="d.png"),  # clean, nothing
    ]


# ----------------------------------------------------------------------------- dataset reading
def test_read_split_folders_txt_lists_and_relative_path(tmp_path):
    root = tmp_path / "sets" / "ds"
    for sub in ("a", "b"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "labels" / sub).mkdir(parents=True)
    for name in ("x.png", "y.jpg"):
        (root / "images" / "a" / name).write_bytes(b"")
    (root / "images" / "b" / "z.png").write_bytes(b"")
    (root / "list.txt").write_text("./images/b/z.png\n\n")
    (root / "labels" / "a" / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.3 0.1 0.2 0.4\n")
    data = tmp_path / "sets" / "data.yaml"
    data.write_text("path: ds\ntrain: images/a\nval: [images/a, list.txt]\nnames: [scratch, spot]\n")
    names, images = E.read_split(data, "val")
    assert names == NAMES
    assert [p.name for p in images] == ["x.png", "y.jpg", "z.png"] and all(p.is_absolute() for p in images)
    cls, boxes = E._read_labels(label_path(images[0]), 2)
    assert cls.tolist() == [1, 0]
    np.testing.assert_allclose(boxes, [[0.4, 0.3, 0.6, 0.7], [0.1, 0.1, 0.3, 0.4]])  # box; polygon's bounds
    cls, boxes = E._read_labels(label_path(images[1]), 2)  # no label file: a clean part
    assert cls.shape == (0,) and boxes.shape == (0, 4)


def test_data_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "labels" / "val" / "a.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"a\.txt: class 7 outside 0\.\.1"):
        E._read_labels(bad, 2)
    bad.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(DataError, match=r"a\.txt: 1 invalid row"):
        E._read_labels(bad, 2)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "images" / "val" / "a.png").write_bytes(b"")
    data = tmp_path / "data.yaml"
    data.write_text("train: images/val\nval: images/val\nnames: [a]\n")
    with pytest.raises(DataError, match="no 'test:' split"):
        E.read_split(data, "test")
    data.write_text("train: images/val\nval: list.txt\nnames: [a]\n")
    with pytest.raises(DataError, match=r"data\.yaml:2: .*list\.txt not found"):
        E.read_split(data, "val")
    (tmp_path / "list.txt").write_text("images/val/a.png\nimages/val/b.png\n")
    with pytest.raises(DataError, match=r"list\.txt:2: image .*b\.png not found"):
        E.read_split(data, "val")
    data.write_text("train: images/val\nval: images/val\n")
    with pytest.raises(DataError, match="names"):
        E.read_split(data, "val")


# ----------------------------------------------------------------------------- report from detections
def test_build_report_metrics_kpis_and_given_thresholds():
    rep = E.build_report(_constructed_images(), NAMES, thresholds={"scratch": 0.5, "spot": 0.5})
    assert rep.threshold_source == "given" and rep.calibration is None
    # scratch: 1 label, TP 0.9 then FP 0.3 (clean part) and FP 0.2 (wrong class on b) -> AP 0.995
    # spot: 1 label, TP 0.4 -> AP 0.995; at 0.5 nothing of spot passes -> recall 0
    assert rep.map50 == pytest.approx(0.995) and rep.per_class["spot"]["recall"] == 0.0
    assert rep.per_class["scratch"] == {
        "ap50": pytest.approx(0.995),
        "ap50_95": pytest.approx(0.995),
        "precision": 1.0,
        "recall": 1.0,
        "labels": 1,
    }
    assert rep.per_class_recall_at_op == {"scratch": 1.0, "spot": 0.0}
    assert (rep.escapes, rep.n_defective, rep.overkills, rep.n_clean, rep.n_images) == (1, 2, 0, 2, 4)
    assert rep.escape_rate == 0.5 and rep.overkill_rate == 0.0
    assert len(rep.pr_curves["spot"]["recall"]) == len(rep.pr_curves["spot"]["precision"]) == 101
    # one global threshold at 0.35: b caught by 0.4 spot, c (0.3) not flagged
    i = rep.kpi_curve["conf"].index(0.35)
    assert rep.kpi_curve["escape_rate"][i] == 0.0 and rep.kpi_curve["overkill_rate"][i] == 0.0


def test_calibrated_report_and_thresholds_yaml(tmp_path):
    rep = E.build_report(_constructed_images(), NAMES, target_escape=0.0)
    assert rep.threshold_source == "calibrated" and rep.calibration["reachable"]
    assert (rep.escapes, rep.overkills) == (0, 0)
    assert 0.3 < rep.thresholds["scratch"] <= 0.9 and 0.2 < rep.thresholds["spot"] <= 0.4
    rep.model, rep.data = "m.onnx", "d.yaml"
    doc = yaml.safe_load(E.write_thresholds(rep, tmp_path / "t" / "thresholds.yaml").read_text())
    assert set(doc) >= {"thresholds", "target_escape", "achieved", "model", "data"}
    assert doc["thresholds"] == rep.thresholds and doc["target_escape"] == 0.0 and doc["escape_rule"] == "box"
    assert doc["achieved"] == {
        "escape_rate": 0.0,
        "overkill_rate": 0.0,
        "escapes": 0,
        "overkills": 0,
        "n_defective": 2,
        "n_clean": 2,
    }
    assert (doc["model"], doc["data"], doc["reachable"]) == ("m.onnx", "d.yaml", True)
    # the written file is a valid --thresholds input and reproduces the same decisions
    again = E.build_report(_constructed_images(), NAMES, thresholds=str(tmp_path / "t" / "thresholds.yaml"))
    assert (again.escapes, again.overkills) == (0, 0)


def test_threshold_inputs_and_errors(tmp_path):
    assert E.operating_thresholds(0.4, NAMES).given == {0: 0.4, 1: 0.4}
    assert E.operating_thresholds(None, NAMES) is None
    partial = E.operating_thresholds({"scratch": 0.3}, NAMES)
    assert partial.given == {0: 0.3} and not partial.complete  # partial: spot stays at its max-F1
    assert E.operating_thresholds(partial, NAMES) is partial  # parsed once, then passed on as it is
    with pytest.raises(ConfigError, match=r"--thresholds 1.5: expected one confidence in \[0, 1\]"):
        E.operating_thresholds(1.5, NAMES)
    f = tmp_path / "t.yaml"
    f.write_text("thresholds: [0.1]\n")
    with pytest.raises(ConfigError, match="t.yaml: 'thresholds' must be a mapping"):
        E.operating_thresholds(str(f), NAMES)


def test_partial_thresholds_keep_max_f1_for_the_other_classes():
    full = E.build_report(_constructed_images(), NAMES)
    part = E.build_report(_constructed_images(), NAMES, thresholds={"scratch": 0.5})
    assert part.thresholds == {"scratch": 0.5, "spot": full.thresholds["spot"]}
    assert (part.threshold_source, full.threshold_source) == ("given+max-f1", "max-f1")


def test_save_writes_json_and_pngs_atomically(tmp_path):
    rep = E.build_report(_constructed_images(), NAMES)
    paths = rep.save(tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(rep.to_dict()))
    for key in ("pr", "kpi"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part_kpis.png",
        "pr_curves.png",
        "val_report.json",
    ]
    # max-F1 thresholds: scratch 0.9 (TP, then two FPs), spot 0.4 (its only box, a TP)
    assert rep.thresholds == {"scratch": 0.9, "spot": 0.4}
    assert (
        "thresholds: max-f1, caught by a correct box): escape 0.0% (0 of 2 defective), overkill 0.0% (0 of "
        "2 clean)" in rep.summary()
    )


def test_escape_rule_any_counts_as_the_line_rejects(tmp_path):
    """b.png's only detection above threshold is a wrong-class box on its defect: an escape by the box
    rule, a rejected part by the line's rule (any detection)."""
    t = {"scratch": 0.1, "spot": 0.5}
    box = E.build_report(_constructed_images(), NAMES, thresholds=t)
    line = E.build_report(_constructed_images(), NAMES, thresholds=t, escape_rule="any")
    assert (box.escapes, box.overkills, line.escapes, line.overkills) == (1, 1, 0, 1)
    assert "caught by any detection): escape 0.0% (0 of 2 defective)" in line.summary()
    assert line.map50 == box.map50  # box metrics do not depend on the rule
    with pytest.raises(ConfigError, match="escape_rule='strict': expected one of box, any"):
        E.evaluate("m.onnx", "d.yaml", escape_rule="strict")  # before any file is read
    line.model, line.data = "m.onnx", "d.yaml"
    doc = yaml.safe_load(E.write_thresholds(line, tmp_path / "thresholds.yaml").read_text())
    assert doc["escape_rule"] == "any"


# ----------------------------------------------------------------------------- end to end
def test_val_pt_onnx_and_int8_share_the_path_and_agree(tiny):
    names, images = E.read_split(tiny["data"], "val")
    dets = {k: E.collect_detections(tiny[k], images, 2, imgsz=128)[0] for k in ("pt", "onnx")}
    assert all(len(d.conf) for d in dets["pt"]), "the tiny model should produce detections on every image"
    for a, b in zip(dets["pt"], dets["onnx"]):  # same boxes and scores, up to float noise
        top = np.sort(a.conf)[-5:]
        np.testing.assert_allclose(np.sort(b.conf)[-5:], top, atol=2e-3)
    reports = {
        k: E.evaluate(tiny[k], tiny["data"], imgsz=128 if k == "pt" else None) for k in ("pt", "onnx", "int8")
    }
    ref = reports["pt"].to_dict()
    for k in ("onnx", "int8"):
        d = reports[k].to_dict()
        assert d.keys() == ref.keys() and d["per_class"].keys() == ref["per_class"].keys()
        assert (d["n_images"], d["n_defective"], d["n_clean"], d["imgsz"]) == (8, 4, 4, [128, 128])
    # FP32 ONNX agrees with PyTorch in the metrics; part KPIs may differ by at most one part of four
    d = reports["onnx"].to_dict()
    assert d["map50"] == pytest.approx(ref["map50"], abs=0.02) and d["map50_95"] == pytest.approx(
        ref["map50_95"], abs=0.02
    )
    assert (
        abs(d["escape_rate"] - ref["escape_rate"]) <= 0.25
        and abs(d["overkill_rate"] - ref["overkill_rate"]) <= 0.25
    )
    # INT8 runs the same path over the same images. Its metrics are not compared with FP32's: these weights
    # are random, their scores crowd together, and INT8 rounding reorders them (top scores moved by up to 0.3
    # and mAP50 by 0.16 on one CPU, by less than 0.1 on another); test_export_quantize measures the Q/DQ
    # error.
    for a, b in zip(reports["onnx"].detections, reports["int8"].detections):
        assert a.name == b.name and len(b.conf) and ((b.conf >= 0) & (b.conf <= 1)).all()
    assert reports["onnx"].thresholds == pytest.approx(reports["pt"].thresholds, abs=2e-3)


def test_cli_val_writes_report_and_thresholds(tiny, tmp_path, capsys):
    out = tmp_path / "val"
    rc = dd_cli.main(
        [
            "val",
            "--model",
            str(tiny["onnx"]),
            "--data",
            str(tiny["data"]),
            "--out",
            str(out),
            "target_escape=0.25",
        ]
    )
    doc = yaml.safe_load((out / "thresholds.yaml").read_text())
    assert rc == (0 if doc["reachable"] else 1)
    assert set(doc["thresholds"]) == set(NAMES) and doc["target_escape"] == 0.25
    assert doc["achieved"]["n_defective"] == 4 and doc["achieved"]["n_clean"] == 4
    report = json.loads((out / "val_report.json").read_text())
    assert report["threshold_source"] == "calibrated" and report["escapes"] == doc["achieved"]["escapes"]
    assert "escape" in capsys.readouterr().out


def test_class_count_mismatch_is_refused(tiny, tmp_path):
    data = tmp_path / "three.yaml"
    root = tiny["data"].parent
    data.write_text(
        yaml.safe_dump(
            {"path": str(root), "train": "images/train", "val": "images/val", "names": ["a", "b", "c"]}
        )
    )
    with pytest.raises(DataError, match="the model has 2 classes but the data has 3"):
        E.evaluate(tiny["onnx"], data)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["val"], "--model and --data are required"),
        (["val", "--model", "nope.pt", "--data", "d.yaml"], "nope.pt: model file not found"),
        (
            ["val", "--model", "m.pt", "--data", "d.yaml", "--target-escape", "1.5"],
            "expected a number in [0, 1) (an escape rate)",
        ),
        (["val", "--model", "m.pt", "--data", "d.yaml", "colour=red"], "unknown option 'colour'"),
        (
            ["val", "--model", "m.pt", "--data", "d.yaml", "--escape-rule", "strict"],
            "--escape-rule strict: expected one of box, any",
        ),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").write_text("train: .\nval: .\nnames: [a]\n")
    assert dd_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- real dataset
@pytest.mark.slow
@pytest.mark.skipif(
    not (DEEPPCB / "data_rare.yaml").is_file(), reason="DeepPCB not present at ../shared/data/deeppcb"
)
def test_read_deeppcb_rare_split_matches_its_stats():
    stats = json.loads((DEEPPCB / "stats.json").read_text())
    names, images = E.read_split(DEEPPCB / "data_rare.yaml", "val")
    assert len(names) == 6
    assert len(images) == stats["val"]["defect_images"] + stats["val"]["template_neg_images"]
    labels = [E._read_labels(label_path(p), len(names))[0] for p in images]
    assert sum(len(c) > 0 for c in labels) == stats["val"]["defect_images"]
    assert sum(len(c) for c in labels) == stats["val"]["instances"]
    _, train = E.read_split(DEEPPCB / "data_rare.yaml", "train")  # a .txt list of ./ paths
    assert train and all(p.is_file() for p in train[:20])


def test_part_threshold_rule_gives_one_threshold_and_records_it():
    rep = E.build_report(
        _constructed_images(), NAMES, target_escape=0.0, escape_rule="any", threshold_rule="part"
    )
    assert len(set(rep.thresholds.values())) == 1 and rep.escapes == 0
    assert rep.calibration["threshold_rule"] == "part" and rep.calibration["confidence"] is None
    # a.png 0.9 (scratch) and b.png 0.4 (spot) are the defective parts: one threshold at or under 0.4 catches
    # both; the highest score under it is clean c.png's 0.3, so it sits midway (0.35) and c.png passes
    assert rep.thresholds["scratch"] == pytest.approx(0.35) and rep.overkills == 0
    per_class = E.build_report(_constructed_images(), NAMES, target_escape=0.0, escape_rule="any")
    assert per_class.calibration["threshold_rule"] == "per-class"


def test_overkill_target_sets_the_part_threshold_from_the_good_parts(tmp_path):
    """Good parts c.png (0.3) and d.png (nothing). At 50 %: (j + 1) / 3 <= 0.5 -> j = 0, the threshold
    sits just above 0.3; both defective parts (0.9, 0.4) are caught. At 20 % two good parts are too few."""
    kw = {"escape_rule": "any", "threshold_rule": "part"}
    rep = E.build_report(_constructed_images(), NAMES, target_overkill=0.5, **kw)
    assert rep.calibration["target_overkill"] == 0.5 and rep.calibration["allowed_overkills"] == 0
    assert rep.calibration["reachable"] and rep.threshold_source == "calibrated"
    assert len(set(rep.thresholds.values())) == 1 and rep.thresholds["spot"] == pytest.approx(0.3)
    assert rep.thresholds["spot"] > 0.3 and (rep.escapes, rep.overkills) == (0, 0)
    written = yaml.safe_load(E.write_thresholds(rep, tmp_path / "t.yaml").read_text())
    assert written["target_overkill"] == 0.5 and written["target_escape"] is None
    few = E.build_report(_constructed_images(), NAMES, target_overkill=0.2, **kw)
    assert not few.calibration["reachable"] and few.overkills == 0
    assert "overkill target 0.2 is unreachable: 2 good parts are too few" in few.summary()
    with pytest.raises(DefectdetError, match="expected with threshold_rule part"):
        E.build_report(_constructed_images(), NAMES, target_overkill=0.5, escape_rule="any")
    with pytest.raises(DefectdetError, match="expected one of them, not both"):
        E.build_report(_constructed_images(), NAMES, target_escape=0.1, target_overkill=0.5, **kw)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--threshold-rule", "global"], "--threshold-rule global: expected one of per-class, part"),
        (
            ["--confidence", "0.9", "--target-escape", "0.01"],
            "expected together with --target-escape or --target-overkill and --threshold-rule part",
        ),
        (
            ["--target-overkill", "0.05", "--target-escape", "0.01", "--threshold-rule", "part"],
            "--target-escape 0.01 and --target-overkill 0.05: expected one of them",
        ),
        (["--target-overkill", "0.05"], "--target-overkill 0.05: expected with --threshold-rule part"),
        (
            ["--target-overkill", "0", "--threshold-rule", "part"],
            r"--target-overkill=0.0: expected a number in \(0, 1\) \(an overkill rate\)",
        ),
        (
            ["--confidence", "1.2", "--target-escape", "0.01", "--threshold-rule", "part"],
            r"--confidence=1.2: expected a number in \[0.5, 1\) \(a probability",
        ),
    ],
)
def test_val_threshold_rule_options_are_checked(argv, match):
    with pytest.raises(DefectdetError, match=match):
        E._args(["--model", "m.onnx", "--data", "d.yaml", *argv])
