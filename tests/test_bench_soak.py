"""bench/soak.py --compare and bench/runtime.py: smoke runs that print and save measured numbers."""

import json
import re

import benchscripts


def test_soak_compare_smoke(tmp_path, capsys):
    model = benchscripts.load("runtime").make_model(tmp_path / "m", 128, logit_mean=-4.0, logit_std=1.5)
    soak = benchscripts.load("soak")
    assert (
        soak.main(
            [
                "--compare",
                "--model",
                str(model),
                "--imgsz",
                "128",
                "--frames",
                "12",
                "--rounds",
                "1",
                "--threads",
                "1",
                "--width",
                "320",
                "--height",
                "240",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = re.findall(
        r"^\| 128 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| [\d.]+ \| \*\*([\d.]+)\*\* \| [\d.]+ \| (.+) \|$",
        out,
        re.M,
    )
    assert len(rows) == 1 and all(float(x) > 0 for x in rows[0][:4])
    assert len(rows[0][4].split(" / ")) == 5  # pre / infer / post / decide / sinks
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["table"] in out and saved["results"]["128"]["rounds"]["p"]


def test_runtime_bench_smoke_has_every_path(tmp_path):
    """bench/runtime.py on a tiny model: paths (a)-(d) ((d) = Detector.stream), the ratios in its JSON."""
    import subprocess
    import sys
    from pathlib import Path

    runtime = benchscripts.load("runtime")
    model = runtime.make_model(tmp_path / "m", 128, logit_mean=-3.0, logit_std=1.5)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "runtime.py"),
            "--model",
            str(model),
            "--frames",
            "12",
            "--threads",
            "1",
            "--block",
            "5",
            "--warmup",
            "1",
            "--conf",
            "0.1",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r["paths"]) == {"a", "b", "c", "d"} and all(p["fps"] > 0 for p in r["paths"].values())
    assert r["d_over_c"] > 0 and r["d_over_a"] > 0 and "(d) defectdet Detector.stream" in out.stdout
