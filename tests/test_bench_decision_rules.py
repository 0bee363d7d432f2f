"""bench/decision_rules.py: every rule cross-fitted over two halves (worked numbers), the table's counts,
and inputs that are not a run."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from test_bench_kfold import GT  # noqa: E402
from test_bench_kfold import _part as kfold_part  # noqa: E402

from bench import decision_rules as B  # noqa: E402
from defectdet.errors import ConfigError  # noqa: E402


def _part(score=None, defective=False):
    return kfold_part(score, defective, box=GT)  # a detection on the defect (or where it would be)


def test_score_counts_every_part_once_at_the_other_halfs_thresholds():
    """100 good parts (scores 0.000 .. 0.495) then 4 defective ones (0.30, 0.6, 0.7, 0.8), dealt i % 2.
    good parts @5 %, 90 %: 50 good parts a half, P(Bin(50, .05) >= 1) = 0.923 -> j = 0: each half at
    just above the other half's best good score: half 0 (even, best 0.490) at 0.495+, half 1 at 0.490+
    (its 0.495 flagged); 0.30 escapes.
    per-class @1 %: two defective parts a half allow no escape: the threshold under the weakest defect
    of the other half (0.30 or 0.6) -> the half counted at 0.30's threshold flags its good parts above it."""
    parts = [_part(i / 200) for i in range(100)] + [_part(s, True) for s in (0.30, 0.6, 0.7, 0.8)]
    out = B.score(parts, ["defect"])
    good = out["good90"]
    assert (good["escapes"], good["overkills"], good["n_defective"], good["n_clean"]) == (1, 1, 4, 100)
    per = out["per_class"]
    # half 0 holds 0.30 and 0.7 (indices 100, 102); half 1 holds 0.6 and 0.8. Half 1 is counted at half
    # 0's threshold (0.295, midway to half 0's good 0.29): its good parts 0.295 .. 0.495 (odd 59..99: 21);
    # half 0 at half 1's (under 0.6, above every good part): 0.30 escapes
    assert (per["escapes"], per["overkills"]) == (1, 21)
    assert 0 <= out["map50"] <= 1
    # in hindsight, on all 104 parts: 1 % of 4 allows no escape -> the threshold at 0.30, the weakest
    # defect; good parts at 0.30 .. 0.495 (i = 60 .. 99) are flagged
    h = out[B.HINDSIGHT]
    assert (h["escapes"], h["overkills"], h["n_defective"], h["n_clean"], h["reachable"]) == (
        0,
        40,
        4,
        100,
        True,
    )


def test_table_counts_the_targets_met_and_the_medians():
    def cell(e, o, reachable=True):
        return {"escapes": e, "n_defective": 100, "overkills": o, "n_clean": 200, "reachable": reachable}

    rows = [
        {"name": "a", "map50": 0.8, "per_class": cell(1, 10), "part90": cell(2, 4), "good90": cell(0, 9)},
        {
            "name": "b",
            "map50": 0.7,
            "per_class": cell(3, 0),
            "part90": cell(1, 11),
            "good90": cell(1, 12, False),
        },
    ]
    text = B.table(rows)
    assert (
        "| a | 100 / 200 | 0.800 | 1 (1.0%) / 10 (5.0%) | 2 (2.0%) / 4 (2.0%) | 0 (0.0%) / 9 (4.5%) |" in text
    )
    assert "1 (1.0%) / 12 (6.0%) (unreachable)" in text
    assert "| **met ≤ 1 % escape at ≤ 5 % overkill** | | | 1 of 2 | 0 of 2 | 1 of 2 |" in text
    assert "| **median escape / overkill** | | | 2.0% / 2.5% | 1.5% / 3.8% | 0.5% / 5.2% |" in text


def test_inputs_that_are_not_a_run_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="expected a demo run folder or MODEL:DATA"):
        B.resolve(str(tmp_path / "nothing.onnx"))
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"model.onnx not found; expected the model of the run"):
        B.resolve(str(tmp_path / "run"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"d.yaml not found; expected the data.yaml"):
        B.resolve(f"{tmp_path / 'm.onnx'}:{tmp_path / 'd.yaml'}")


def test_report_only_rebuilds_the_table_from_the_kept_lines(tmp_path, capsys):
    import json

    with pytest.raises(ConfigError, match="decision_rules.jsonl: not found"):
        B.main(["--report-only", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="expected demo run folders"):
        B.main(["--out", str(tmp_path)])
    cell = {"escapes": 0, "n_defective": 10, "overkills": 1, "n_clean": 40, "reachable": True}
    row = {"name": "m", "map50": 0.5, **{k: cell for k, _, _ in B.RULES}}
    (tmp_path / "decision_rules.jsonl").write_text(json.dumps(row) + "\n")
    page = tmp_path / "p.md"
    page.write_text(f"<!-- {B.MARKER}:start -->\n<!-- {B.MARKER}:end -->\n")
    assert B.main(["--report-only", "--out", str(tmp_path), "--page", str(page)]) == 0
    assert "| m | 10 / 40 | 0.500 | 0 (0.0%) / 1 (2.5%) |" in page.read_text()
    assert "| 1 of 1 | 1 of 1 | 1 of 1 |" in page.read_text()


def test_a_named_pair_and_a_rerun_keep_the_earlier_models(tmp_path, monkeypatch, capsys):
    """``NAME=MODEL:DATA`` names the row; a later run adds its models to the kept lines and replaces only
    a model of the same name."""
    import json

    (tmp_path / "best.pt").write_bytes(b"x")
    (tmp_path / "d.yaml").write_text("names: [a]\n")
    assert B.resolve(f"pcb-s0={tmp_path / 'best.pt'}:{tmp_path / 'd.yaml'}") == (
        "pcb-s0",
        tmp_path / "best.pt",
        tmp_path / "d.yaml",
    )
    cell = {"escapes": 0, "n_defective": 10, "overkills": 1, "n_clean": 40, "reachable": True}
    old = {"name": "demo", "map50": 0.5, **{k: cell for k, _, _ in B.RULES}}
    stale = {**old, "name": "pcb-s0", "map50": 0.1}
    (tmp_path / "decision_rules.jsonl").write_text(json.dumps(old) + "\n" + json.dumps(stale) + "\n")
    monkeypatch.setattr(B, "run_one", lambda item, out: {**old, "name": B.resolve(item)[0], "map50": 0.8})
    assert B.main([f"pcb-s0={tmp_path / 'best.pt'}:{tmp_path / 'd.yaml'}", "--out", str(tmp_path)]) == 0
    rows = [json.loads(x) for x in (tmp_path / "decision_rules.jsonl").read_text().splitlines()]
    assert [(r["name"], r["map50"]) for r in rows] == [("demo", 0.5), ("pcb-s0", 0.8)]


def test_models_of_different_data_sets_are_summed_per_set():
    """A demo run and a DeepPCB model are not one population: the met counts and medians are per set."""

    def cell(e, o):
        return {"escapes": e, "n_defective": 100, "overkills": o, "n_clean": 200, "reachable": True}

    def row(name, data, e, o):
        return {"name": name, "data": data, "map50": 0.5, **{k: cell(e, o) for k, _, _ in B.RULES}}

    rows = [
        row("seed0-threads1", "/runs/seed0-threads1/data/data.yaml", 0, 4),
        row("seed1-threads1", "/runs/seed1-threads1/data/data.yaml", 2, 6),
        row("pcb-s0", "../shared/data/deeppcb/data_rare.yaml", 3, 20),
        {**row("pcb-s1", "elsewhere.yaml", 1, 2), "set": "deeppcb/data_rare"},  # named by run_one
    ]
    assert [B.data_set(r) for r in rows] == ["demo", "demo", "deeppcb/data_rare", "deeppcb/data_rare"]
    text = B.table(rows)
    assert "| **demo: met ≤ 1 % escape at ≤ 5 % overkill** | | | 1 of 2 | 1 of 2 | 1 of 2 |" in text
    assert "| **demo: median escape / overkill** | | | 1.0% / 2.5% | 1.0% / 2.5% | 1.0% / 2.5% |" in text
    assert "| **deeppcb/data_rare: met ≤ 1 % escape at ≤ 5 % overkill** | | | 1 of 2 |" in text
    assert "| **deeppcb/data_rare: median escape / overkill** | | | 2.0% / 5.5% |" in text


def test_report_only_adds_the_hindsight_ceiling_from_the_cached_detections(tmp_path, capsys):
    """Rows kept before the column existed get it from ``<out>/<name>/dets.json.gz``; a row without
    its detections says "not scored"."""
    import json

    from bench.kfold import save_detections

    parts = [_part(i / 200) for i in range(100)] + [_part(s, True) for s in (0.30, 0.6, 0.7, 0.8)]
    save_detections(tmp_path / "m" / "dets.json.gz", parts)
    cell = {"escapes": 0, "n_defective": 4, "overkills": 1, "n_clean": 100, "reachable": True}
    rows = [{"name": n, "map50": 0.5, **{k: cell for k, _, _ in B.RULES}} for n in ("m", "gone")]
    kept = tmp_path / "decision_rules.jsonl"
    kept.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert B.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| m | 4 / 100 | 0.500 |" in text and "| 0 (0.0%) / 40 (40.0%) |" in text
    assert "| gone | 4 / 100 | 0.500 |" in text and "| not scored |" in text
    again = [json.loads(x) for x in kept.read_text().splitlines()]
    assert again[0][B.HINDSIGHT]["overkills"] == 40 and B.HINDSIGHT not in again[1]
