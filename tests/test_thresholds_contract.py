"""One thresholds parser: the same YAML files give the same per-class thresholds, or the same
one-line error, in ``defectdet val``, ``defectdet gate``, ``defectdet inspect`` and ``Detector``;
``val --write-sidecar`` puts them where the runtime reads them; the artefact's files keep the
user's file mode."""

import json
import os
import shutil
import stat

import benchscripts
import numpy as np
import pytest

from defectdet import evaluate as E
from defectdet import metrics as M
from defectdet.cli import main
from defectdet.errors import ConfigError
from defectdet.runtime import Detector
from defectdet.station import decisions

NAMES = ["scratch", "spot", "crack", "dent"]

# file text -> the thresholds it sets, by name (every other class keeps the command's default)
GOOD = {
    "names": (
        "thresholds:\n  scratch: 0.35\n  spot: 0.2\n  crack: 0.5\n  dent: 0.6\n",
        {"scratch": 0.35, "spot": 0.2, "crack": 0.5, "dent": 0.6},
    ),
    "ids": (
        "thresholds:\n  0: 0.35\n  '1': 0.2\n  2: 0.5\n  3: 0.6\nnote: calibrated elsewhere\n",
        {"scratch": 0.35, "spot": 0.2, "crack": 0.5, "dent": 0.6},
    ),
    "partial": ("thresholds:\n  crack: 0.45\n  3: 0.7\n", {"crack": 0.45, "dent": 0.7}),
}
# file text -> the error every command prints (after "<file>: ")
BAD = {
    "non-numeric": (
        "thresholds:\n  spot: high\n",
        "threshold for class 'spot' must be a number in [0, 1], got 'high'",
    ),
    "out-of-range": ("thresholds:\n  0: 1.5\n", "threshold for class 0 must be a number in [0, 1], got 1.5"),
    "boolean": (
        "thresholds:\n  dent: yes\n",
        "threshold for class 'dent' must be a number in [0, 1], got True",
    ),
    "unknown-class": (
        "thresholds:\n  rust: 0.3\n",
        "threshold for unknown class 'rust'; expected one of "
        "['scratch', 'spot', 'crack', 'dent'] or ids 0..3",
    ),
    "twice": (
        "thresholds:\n  scratch: 0.3\n  0: 0.4\n",
        "class 'scratch' has two thresholds (keys 'scratch' and 0); expected one per class",
    ),
    "no-mapping": (
        "scratch: 0.3\n",
        "expected a top-level 'thresholds:' mapping of class name or id -> confidence",
    ),
    "a-list": (
        "thresholds: [0.1, 0.2]\n",
        "'thresholds' must be a mapping of class name or id -> confidence, got list",
    ),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 4-class ONNX stand-in at 96 px with its sidecar (as `defectdet export` writes it)."""
    return benchscripts.load("runtime").make_model(
        tmp_path_factory.mktemp("model"), 96, logit_mean=-4.0, logit_std=1.5
    )


@pytest.fixture
def data(tmp_path):
    """A data.yaml whose val split holds four (unread) images of the model's classes."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(4):
        (tmp_path / "images" / f"{i}.png").write_bytes(b"")
        (tmp_path / "labels" / f"{i}.txt").write_text(f"{i} 0.5 0.5 0.2 0.2\n" if i < 2 else "")
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames: {NAMES}\n")
    return tmp_path / "data.yaml"


@pytest.fixture
def predictions(monkeypatch):
    """`val` and `gate` run their whole path except the model: fixed detections for the four images."""
    gt = [[0, 0, 10, 10]]
    images = [
        M.ImageDetections([[0, 0, 10, 10]], [0.9], [0], gt, [0], name="0.png"),
        M.ImageDetections([[0, 0, 10, 10]], [0.8], [1], gt, [1], name="1.png"),
        M.ImageDetections([[0, 0, 10, 10]], [0.3], [2], np.zeros((0, 4)), [], name="2.png"),
        M.ImageDetections(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [], name="3.png"),
    ]
    monkeypatch.setattr(E, "collect_detections", lambda *a, **k: (images, [96, 96]))


@pytest.fixture
def decider_thresholds(monkeypatch):
    """The per-class thresholds `inspect` hands its Decider, frame after frame."""
    seen = []

    class Spy(decisions.Decider):
        def __init__(self, names, **kw):
            super().__init__(names, **kw)
            seen.append(dict(zip(names.values(), self.thresholds.tolist())))

    monkeypatch.setattr(decisions, "Decider", Spy)
    return seen


def _val(model, data, f, out):
    rc = main(["val", "--model", str(model), "--data", str(data), "--thresholds", str(f), "--out", str(out)])
    return rc, json.loads((out / "val_report.json").read_text())["thresholds"] if rc == 0 else None


def _gate(model, data, f):
    int8 = model.with_name("model.int8.onnx")
    shutil.copyfile(model, int8)
    shutil.copyfile(model.with_suffix(".json"), int8.with_suffix(".json"))
    rc = main(
        ["gate", "--fp32", str(model), "--int8", str(int8), "--data", str(data), "--thresholds", str(f)]
    )
    doc = json.loads(int8.with_suffix(".gate.json").read_text()) if rc == 0 else {}
    return rc, (doc.get("fp32") or {}).get("thresholds"), (doc.get("int8") or {}).get("thresholds")


def _inspect(model, f, out):
    return main(
        [
            "inspect",
            "--model",
            str(model),
            "--source",
            "synthetic://?width=160&height=120",
            "--max-frames",
            "1",
            "--thresholds",
            str(f),
            "--out",
            str(out),
            "status_every=0",
            "snapshots.enabled=false",
        ]
    )


def _subset(thresholds, keys):
    return {k: pytest.approx(thresholds[k]) for k in keys}


@pytest.mark.parametrize("case", list(GOOD))
def test_every_command_reads_a_thresholds_file_alike(
    case, model, data, predictions, decider_thresholds, tmp_path, capsys
):
    text, expected = GOOD[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    want = {k: pytest.approx(v) for k, v in expected.items()}
    with Detector(model, thresholds=f) as det:
        assert _subset(dict(zip(NAMES, det.thresholds.tolist())), expected) == want
        assert all(
            t == pytest.approx(0.25) for n, t in zip(NAMES, det.thresholds.tolist()) if n not in expected
        )
    rc, val = _val(model, data, f, tmp_path / "val")
    assert rc == 0 and _subset(val, expected) == want
    rc, fp32, int8 = _gate(model, data, f)
    assert rc == 0 and _subset(fp32, expected) == want and _subset(int8, expected) == want
    assert _inspect(model, f, tmp_path / "inspect") == 0
    assert len(decider_thresholds) == 1 and _subset(decider_thresholds[0], expected) == want
    if case == "partial":  # val and gate take the other classes at their max-F1 confidence
        maxf1 = E.build_report(E.collect_detections()[0], NAMES).thresholds
        assert val["scratch"] == pytest.approx(maxf1["scratch"]) and val["spot"] == pytest.approx(
            maxf1["spot"]
        )


@pytest.mark.parametrize("case", list(BAD))
def test_every_command_refuses_a_bad_thresholds_file_with_the_same_line(
    case, model, data, predictions, tmp_path, capsys
):
    text, message = BAD[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    expected = f"{f}: {message}"
    with pytest.raises(ConfigError) as e:
        Detector(model, thresholds=f)
    assert str(e.value) == expected
    capsys.readouterr()
    commands = {
        "val": lambda: _val(model, data, f, tmp_path / "val")[0],
        "gate": lambda: _gate(model, data, f)[0],
        "inspect": lambda: _inspect(model, f, tmp_path / "inspect"),
    }
    for name, run in commands.items():
        rc = run()
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err == [f"defectdet {name}: error: {expected}"], name


@pytest.mark.parametrize(
    "setting, message",
    [
        ("iou=1.5", "iou=1.5: expected a number in [0, 1] (an IoU threshold)"),
        ("conf=-0.1", "conf=-0.1: expected a number in [0, 1] (a confidence threshold)"),
        ("max_det=0", "max_det=0: expected an integer >= 1"),
        ("max_det=many", "max_det='many': expected an integer >= 1"),
    ],
)
def test_bad_detector_settings_are_one_line_errors(setting, message, model, tmp_path, capsys):
    rc = main(["inspect", "--model", str(model), "--source", "synthetic://", "--out", str(tmp_path), setting])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [
        f"defectdet inspect: error: {message}"
    ]


def test_val_writes_calibrated_thresholds_into_the_sidecar(model, data, predictions, tmp_path, capsys):
    fp32 = tmp_path / "model.onnx"
    shutil.copyfile(model, fp32)
    shutil.copyfile(model.with_suffix(".json"), fp32.with_suffix(".json"))
    out = tmp_path / "val"
    rc = main(
        [
            "val",
            "--model",
            str(fp32),
            "--data",
            str(data),
            "--target-escape",
            "0",
            "--out",
            str(out),
            "--write-sidecar",
            str(fp32),
        ]
    )
    assert (
        rc == 0
        and f"sidecar: {fp32.with_suffix('.json')} (thresholds: calibrated)" in capsys.readouterr().out
    )
    written = json.loads((out / "val_report.json").read_text())["thresholds"]
    side = json.loads(fp32.with_suffix(".json").read_text())
    assert (
        side["thresholds"] == written
        and side["names"] == json.loads(model.with_suffix(".json").read_text())["names"]
    )
    with Detector(fp32) as det:  # the runtime deploys them with no thresholds file
        assert dict(zip(NAMES, det.thresholds.tolist())) == {k: pytest.approx(v) for k, v in written.items()}


def test_val_write_sidecar_needs_an_exported_model(model, data, predictions, tmp_path, capsys):
    bare = tmp_path / "other.onnx"
    shutil.copyfile(model, bare)
    rc = main(["val", "--model", str(model), "--data", str(data), "--write-sidecar", str(bare)])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        rc == 2 and len(err) == 1 and f"{bare.with_suffix('.json')}: no sidecar beside other.onnx" in err[0]
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_onnx_has_the_mode_of_any_user_file(umask, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from defectdet.artifact import save_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    old = os.umask(umask)
    try:
        path = save_onnx(helper.make_model(graph), tmp_path / "m.onnx")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask == stat.S_IMODE(plain.stat().st_mode)
    assert onnx.load(str(path)).graph.node[0].op_type == "Identity"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
