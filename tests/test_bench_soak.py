"""bench/soak.py --compare: a 1-round smoke run prints one table row per image size with measured numbers."""

import json
import re

import benchscripts


def test_soak_compare_smoke(tmp_path, capsys):
    model = benchscripts.load("runtime").make_model(tmp_path / "m", 128, logit_mean=-4.0, logit_std=1.5)
    soak = benchscripts.load("soak")
    assert soak.main(["--compare", "--model", str(model), "--imgsz", "128", "--frames", "12", "--rounds", "1",
                      "--threads", "1", "--width", "320", "--height", "240", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| 128 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| [\d.]+ \| \*\*([\d.]+)\*\* \| [\d.]+ \| (.+) \|$", out, re.M)
    assert len(rows) == 1 and all(float(x) > 0 for x in rows[0][:4])
    assert len(rows[0][4].split(" / ")) == 5  # pre / infer / post / decide / sinks
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["table"] in out and saved["results"]["128"]["rounds"]["p"]
