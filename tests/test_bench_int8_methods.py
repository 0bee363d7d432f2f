"""bench/int8_methods.py: the table from recorded verdicts, and a run that is not a demo run."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import int8_methods as B  # noqa: E402


def _row(run, method, passed, map_loss, losses):
    return {
        "run": run,
        "label": f"label of {run}",
        "method": method,
        "passed": passed,
        "reasons": [] if passed else ["x"],
        "losses": {"mAP50": map_loss, **{f"AP50[{k}]": v for k, v in losses.items()}},
    }


def test_table_gives_each_verdict_the_worst_class_and_the_pass_counts():
    rows = [
        _row("a", "minmax", True, 0.7, {"scratch": 2.0, "dent": -1.0}),
        _row("a", "percentile", False, 3.6, {"scratch": 1.0, "crack": 8.5}),
        _row("b", "minmax", False, 2.9, {"scratch": 6.1}),
    ]
    text = B.table(rows, ("minmax", "percentile"))
    lines = text.splitlines()
    assert lines[2] == "| label of a | pass: mAP50 -0.7, scratch -2.0 | **refused**: mAP50 -3.6, crack -8.5 |"
    assert lines[3] == "| label of b | **refused**: mAP50 -2.9, scratch -6.1 | not run |"
    assert "Models passed: minmax 1 of 2, percentile 0 of 1." in text
    # medians over the models each method ran on: minmax (-0.7, -2.9) and worst (-2.0, -6.1)
    assert (
        "Median change over the models (and the largest worst-class loss): minmax mAP50 -1.8, worst class "
        "-4.0 (at most -6.1); percentile mAP50 -3.6, worst class -8.5 (at most -8.5)" in text
    )


def test_a_folder_that_is_not_a_demo_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert B.main([str(tmp_path), "--methods", "minmax", "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("int8_methods: error: ") and "model.onnx: missing" in err and "\n" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_variant_is_a_method_and_the_convs_kept_float():
    import argparse

    import pytest

    assert B.variant("minmax") == ("minmax", 0) and B.variant("entropy:8") == ("entropy", 8)
    assert B.title("minmax:4") == "minmax + 4 float" and B.title("percentile") == "percentile"
    for bad in ("minmax:0", "minmax:x", "kl", "minmax:-2"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a method"):
            B.variant(bad)
    rows = [_row("a", "minmax:8", True, 0.1, {"scratch": 0.5})]
    assert B.table(rows, ("minmax:8",)).splitlines()[0] == "| model | minmax + 8 float |"
