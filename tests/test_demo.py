"""The demo: its training run lands under --out as documented (runs/demo/train), not under ultralytics'
runs/detect/ prefix for a relative project (the demo passes an absolute project path); bad values are one-line errors."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from defectdet import demo


class Stop(Exception):
    pass


def test_demo_trains_into_an_absolute_project_under_out(tmp_path, monkeypatch):
    seen = {}

    def fake_train(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "defectdet.train", types.SimpleNamespace(train=fake_train))
    monkeypatch.setattr("defectdet.data.synthetic.make_dataset", lambda out, **kw: Path(out) / "data.yaml")
    with pytest.raises(Stop):
        demo.run_demo(Path("runs/demo"), images=4, epochs=1, imgsz=32, cls_loss="focal", seed=0, batch=2,
                      defect_rate=0.5, defect_scale=1.0, target_escape=0.05)
    assert Path(seen["project"]) == tmp_path / "runs" / "demo" and Path(seen["project"]).is_absolute()
    assert seen["name"] == "train" and seen["exist_ok"] is True
    assert (seen["cls_loss"], seen["gamma"], seen["alpha"], seen["cls"]) == ("focal", 2.0, 0.25, 4.0)  # the preset
    assert demo.loss_settings("auto") == {"cls_loss": "auto"}
    assert demo.loss_settings("focal_mild") == {"cls_loss": "focal", "gamma": 1.0, "alpha": 0.5, "cls": 4.0}
    assert demo.DEMO["defect_rate"] <= 0.15 and demo.DEMO["defect_scale"] == 1.0  # a rare set, default-size defects


@pytest.mark.parametrize("args, message", [
    (["--part-px", "-5"], "--part-px=-5: expected an integer >= 32 (pixels)"),
    (["--defect-rate", "1.5"], "--defect-rate=1.5: expected a fraction in [0, 1]"),
    (["--images", "1"], "--images=1: expected an integer >= 2"),
    (["--epochs", "0"], "--epochs=0: expected an integer >= 1"),
    (["--val-fraction", "1"], "--val-fraction=1.0: expected a fraction in (0, 1)"),
])
def test_bad_demo_values_are_one_line_errors_before_any_work(args, message, tmp_path):
    out = subprocess.run([sys.executable, "-m", "defectdet.cli", "demo", "--out", str(tmp_path / "d"), *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
