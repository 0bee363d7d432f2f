"""Bad model files through every command that reads an ONNX: one line naming the file and what is
wrong, exit 2, no traceback (the one loader, defectdet.artifact.onnx_file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from modelfiles import bad_models, tiny_onnx, write_model

from defectdet.artifact import ModelFileError, load_onnx, sniff_onnx
from defectdet.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAD = bad_models()
# val, quantize, gate and export need Python 3.9 (the CLI says so on 3.8, JetPack 5)
WORKSTATION = pytest.mark.skipif(sys.version_info < (3, 9), reason="a workstation command (Python 3.9+)")


@pytest.fixture
def data_yaml(tmp_path):
    """A one-image dataset (the model must be refused before it matters)."""
    import cv2
    import numpy as np

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    path = tmp_path / "data.yaml"
    path.write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames: {{0: scratch}}\n")
    return path


def _argv(command: str, model: Path, data: Path, tmp_path: Path) -> list:
    return {
        "val": ["val", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "val")],
        "quantize": ["quantize", "--model", str(model), "--data", str(data), "--calib-images", "1"],
        "gate": ["gate", "--fp32", str(model), "--int8", str(model), "--data", str(data)],
        "build-engine": ["build-engine", "--model", str(model), "--dry-run", "--trt-version", "10.3"],
        "build-engine-fp16": ["build-engine", "--model", str(model), "--fp16"],
        "inspect": [
            "inspect",
            "--model",
            str(model),
            "--source",
            str(data.parent / "images"),
            "--out",
            str(tmp_path / "out"),
        ],
        "export": ["export", "--model", str(model)],
    }[command]


@pytest.mark.parametrize("kind", sorted(BAD))
def test_the_loader_names_the_file_and_the_fault(tmp_path, kind):
    data, word = BAD[kind]
    path = write_model(tmp_path, f"{kind}.onnx", data)
    with pytest.raises(ModelFileError) as e:
        load_onnx(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and word in msg and "\n" not in msg


def test_a_good_file_loads_and_a_file_cut_anywhere_is_refused(tmp_path):
    good = tiny_onnx()
    assert len(load_onnx(write_model(tmp_path, "good.onnx", good)).graph.node) == 1
    for n in range(1, len(good) - 1, 3):  # every cut: protobuf error, or parsed but incomplete
        path = write_model(tmp_path, "cut.onnx", good[:n], sidecar=False)
        try:
            model = load_onnx(path)
        except ModelFileError as e:
            assert str(e).startswith(str(path))
        else:  # cut inside the trailing metadata_props: the graph is whole, the metadata is not
            assert len(model.metadata_props) < 3


def test_sniffing_needs_no_onnx_package(tmp_path):
    """The runtime's checks (inspect on a Jetson without `onnx`) refuse the non-protobuf kinds."""
    for kind in ("empty", "text", "lfs", "random", "zip"):
        data, word = BAD[kind]
        with pytest.raises(ModelFileError, match=word):
            sniff_onnx(write_model(tmp_path, f"{kind}.onnx", data))
    with pytest.raises(ModelFileError, match="model not found"):
        sniff_onnx(tmp_path / "missing.onnx")
    assert sniff_onnx(write_model(tmp_path, "good.onnx", tiny_onnx())) == tmp_path / "good.onnx"


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=WORKSTATION) for c in ("val", "quantize", "gate")]
    + ["build-engine", "build-engine-fp16", "inspect"],
)
@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "random", "new-opset"])
def test_every_command_refuses_a_bad_model_in_one_line(tmp_path, data_yaml, capsys, command, kind):
    blob, word = BAD[kind]
    model = write_model(tmp_path, f"{kind}.onnx", blob)
    rc = main(_argv(command, model, data_yaml, tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(model) in err[0] and word in err[0], err
    assert "Traceback" not in err[0]


@WORKSTATION
def test_export_refuses_an_onnx_as_its_input(tmp_path, data_yaml, capsys):
    model = write_model(tmp_path, "random.onnx", BAD["random"][0])
    assert main(_argv("export", model, data_yaml, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(model) in err[0] and "expected an ultralytics .pt" in err[0]


@pytest.mark.parametrize(
    "command, kind",
    [
        ("build-engine", "truncated"),
        ("inspect", "random"),
        pytest.param("quantize", "text", marks=WORKSTATION),
    ],
)
def test_python_dash_m_defectdet_prints_one_line_and_exits_2(tmp_path, data_yaml, command, kind):
    model = write_model(tmp_path, f"{kind}.onnx", BAD[kind][0])
    p = subprocess.run(
        [sys.executable, "-m", "defectdet", *_argv(command, model, data_yaml, tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert (
        len(lines) == 1
        and lines[0].startswith(f"defectdet {command}: error: {model}")
        and BAD[kind][1] in lines[0]
    )
