"""bench/demo_spread.py: one demo run's outcome, the spread table, and resumable runs (the demo faked)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import benchscripts
import pytest

from defectdet.config import dump_yaml

S = benchscripts.load("demo_spread")


def _summary(aps=(0.9, 0.6), gate="pass", false_rejects=0, map50=0.7):
    return {
        "per_class": {n: {"ap50": a, "labels": 9} for n, a in zip(("scratch", "crack"), aps)},
        "map50": map50,
        "escape_rate": 0.03,
        "overkill_rate": 0.02,
        "gate": gate,
        "seconds": 170.0,
        "inspect": {"caught": 1, "defective_parts": 1, "false_rejects": false_rejects, "good_parts": 9},
    }


@pytest.mark.parametrize(
    "kw, ok",
    [({}, True), ({"aps": (0.9, 0.2)}, False), ({"gate": "refused"}, False), ({"false_rejects": 1}, False)],
)
def test_outcome_needs_every_class_the_gate_and_no_false_reject(kw, ok):
    o = S.outcome(_summary(**kw))
    assert o["ok"] is ok
    assert o["weakest"] == "crack" and o["min_ap50"] == kw.get("aps", (0.9, 0.6))[1]


def test_table_lists_runs_and_the_range():
    rows = [
        {"seed": s, "threads": t, **S.outcome(_summary(map50=m, false_rejects=f)), "extra": []}
        for s, t, m, f in ((0, 1, 0.70, 0), (0, 2, 0.64, 2))
    ]
    text = S.table(rows)
    assert "| 0 | 1 | 0.700 | crack 0.60 |" in text and "| 0 | 2 | 0.640 |" in text
    assert "1 of 2 runs reached the outcome" in text and "mAP50 0.640–0.700" in text
    assert "good parts rejected 0–2" in text and "**missed**" in text


def test_runs_are_resumable_and_extra_options_rerun(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, env, cwd):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        dump_yaml(out / "summary.yaml", _summary())
        assert env["OMP_WAIT_POLICY"] and "--threads" in cmd
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(S.subprocess, "run", fake_run)
    assert S.main(["--seeds", "0", "1", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert len(calls) == 2 and (tmp_path / "demo_spread.md").read_text().count("| held |") == 2
    assert S.main(["--seeds", "0", "1", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert len(calls) == 2  # cached
    assert S.main(["--seeds", "0", "--threads", "1", "--out", str(tmp_path), "--", "--epochs", "40"]) == 0
    assert len(calls) == 3 and calls[-1][-2:] == ["--epochs", "40"]

    def failing(cmd, env, cwd):
        return subprocess.CompletedProcess(cmd, 2)

    monkeypatch.setattr(S.subprocess, "run", failing)
    assert S.main(["--seeds", "5", "--threads", "1", "--out", str(tmp_path)]) == 2


def test_readme_block_gives_the_range_and_the_counts_only():
    rows = [
        {"seed": s, "threads": t, **S.outcome(_summary(map50=m, gate=g)), "extra": []}
        for s, t, m, g in ((0, 1, 0.70, "pass"), (0, 2, 0.64, "refused"), (1, 1, 0.66, "pass"))
    ]
    lines = S.readme_block(rows).splitlines()
    assert lines[0] == "| `make demo` over 3 runs (seeds 0, 1 × 1 and 2 training threads) | range |"
    assert "| 2 of 3 |" in lines[2] and lines[3].endswith("| 3 of 3 / 2 of 3 |")
    assert lines[4] == "| mAP50 / weakest class AP50 | 0.640–0.700 / 0.60 |"
    assert lines[6] == "| good parts rejected on the conveyor | 0 (of 9) |"
    assert not any("| 0 | 1 |" in x for x in lines)  # no run listed


def test_readme_flag_rewrites_only_the_readme_block(tmp_path, monkeypatch):
    def fake_run(cmd, env, cwd):
        dump_yaml(Path(cmd[cmd.index("--out") + 1]) / "summary.yaml", _summary())
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(S.subprocess, "run", fake_run)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- demo-range:start -->\nold\n<!-- demo-range:end -->\ntail\n")
    out = tmp_path / "runs"
    assert S.main(["--seeds", "0", "--threads", "1", "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "| 1 of 1 |" in text and text.endswith("<!-- demo-range:end -->\ntail\n")
    readme.write_text("# no markers\n")
    assert S.main(["--seeds", "0", "--threads", "1", "--out", str(out), "--readme", str(readme)]) == 2
