"""Which INT8 calibration method keeps a demo model's accuracy? Each method, each model, the gate's verdict.

    python bench/int8_methods.py runs/demo_spread/seed*-threads*       # runs of bench/demo_spread.py
    python bench/int8_methods.py RUN ... --out runs/int8_methods.jsonl --page docs/demo.md

For every finished ``defectdet demo`` run given (``<run>/train/weights/model.onnx``, ``<run>/data/``),
the FP32 model is quantized with each variant (``--methods``: an activation-range method, minmax,
percentile or entropy, and ``METHOD:N`` for that method with the N convs whose quantized input is noisiest
kept in float, ``defectdet quantize --float-sensitive N``) on the demo's calibration set
(``--calib-images``, half defective, seed 0) and gated exactly as
the demo gates (each model at its own thresholds calibrated for 5% escape, a part rejected on any
detection, losses refused only when their 90% paired-bootstrap interval lies above zero), with
``--force`` so every verdict is recorded. One JSON line per (run, method) in ``--out`` (resumable: a
pair already there is read, not redone); the table gives each model's verdict and losses per method and
how many models each method passed. One quantization and two evaluations per cell: ~30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality_report import update_page  # noqa: E402
from defectdet.config import atomic_write_text, load_yaml  # noqa: E402
from defectdet.errors import DefectdetError  # noqa: E402

MARKER = "int8-methods"
METHODS = ("minmax", "percentile", "entropy")
VARIANTS = ("minmax", "percentile", "entropy", "minmax:4", "minmax:8")  # the default columns
TARGET_ESCAPE = 0.05  # the demo's calibration target (defectdet demo --target-escape)


def label(run: Path) -> str:
    """``1040 parts x 30 ep, seed 2, 2 threads`` from the run's summary.yaml."""
    s = load_yaml(run / "summary.yaml", kind="demo summary")["settings"]
    return f"{s['images']} parts × {s['epochs']} ep, seed {s['seed']}, {s['threads']} thr."


def variant(text: str) -> tuple[str, int]:
    """``minmax`` -> (minmax, 0); ``minmax:8`` -> (minmax, 8 convs kept float by sensitivity)."""
    method, _, k = text.partition(":")
    if method not in METHODS or (k and not (k.isdigit() and int(k) > 0)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a method ({', '.join(METHODS)}), optionally :N with N >= 1 convs kept float"
        )
    return method, int(k or 0)


def title(text: str) -> str:
    """A column's name: ``minmax:8`` -> ``minmax + 8 float``."""
    method, k = variant(text)
    return f"{method} + {k} float" if k else method


def measure(run: Path, method: str, calib_images: int, work: Path) -> dict[str, Any]:
    """Quantize ``run``'s FP32 model with the variant ``method``; gate it as the demo does (forced)."""
    from defectdet.export.gate import run_gate
    from defectdet.export.quantize import quantize_onnx

    fp32, data = run / "train" / "weights" / "model.onnx", run / "data" / "data.yaml"
    for p in (fp32, data):
        if not p.is_file():
            raise DefectdetError(f"{p}: missing; expected a finished `defectdet demo` run in {run}")
    name, k = variant(method)
    dst = work / run.name / f"{method.replace(':', '-f')}.onnx"
    q = quantize_onnx(fp32, data, calib_images, name, dst, show_progress=False, float_sensitive=k)
    g = run_gate(fp32, q.onnx, data, force=True, recalibrate=TARGET_ESCAPE, escape_rule="any")
    return {
        "run": str(run),
        "label": label(run),
        "method": method,
        "calib_images": calib_images,
        "passed": not g.reasons,
        "reasons": list(g.reasons),
        "losses": {c.metric: round(c.loss, 2) for c in g.checks},
        "output_error": q.report.get("output_error"),
    }


def _per_class(row: dict[str, Any]) -> dict[str, float]:
    return {k[5:-1]: v for k, v in row["losses"].items() if k.startswith("AP50[")}


def worst_loss(row: dict[str, Any]) -> float:
    """The largest per-class AP50 loss of one (model, method) row, in points."""
    return max(_per_class(row).values())


def table(rows: list[dict[str, Any]], methods: tuple[str, ...]) -> str:
    """One row per model: each method's verdict, mAP50 loss and worst per-class AP50 loss (points)."""
    by = {(r["run"], r["method"]): r for r in rows}
    runs = list(dict.fromkeys(r["run"] for r in rows))
    head = "| model | " + " | ".join(title(m) for m in methods) + " |"
    lines = [head, "|" + "---|" * (len(methods) + 1)]
    for run in runs:
        cells = []
        for m in methods:
            r = by.get((run, m))
            if r is None:
                cells.append("not run")
                continue
            per_class = _per_class(r)
            worst = max(per_class, key=per_class.get)
            verdict = "pass" if r["passed"] else "**refused**"
            cells.append(f"{verdict}: mAP50 {-r['losses']['mAP50']:+.1f}, {worst} {-per_class[worst]:+.1f}")
        name = next(by[(run, m)]["label"] for m in methods if (run, m) in by)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    passed = {m: sum(by[(r, m)]["passed"] for r in runs if (r, m) in by) for m in methods}
    tried = {m: sum((r, m) in by for r in runs) for m in methods}
    medians = []
    for m in methods:
        got = [by[(r, m)] for r in runs if (r, m) in by]
        if got:
            d_map = float(np.median([-g["losses"]["mAP50"] for g in got]))
            d_worst = float(np.median([-worst_loss(g) for g in got]))
            d_max = -max(worst_loss(g) for g in got)
            medians.append(
                f"{title(m)} mAP50 {d_map:+.1f}, worst class {d_worst:+.1f} (at most {d_max:+.1f})"
            )
    lines.append(
        "\nModels passed: "
        + ", ".join(f"{title(m)} {passed[m]} of {tried[m]}" for m in methods)
        + ". Median change over the models (and the largest worst-class loss): "
        + "; ".join(medians)
        + ". Cells: the gate's verdict, the INT8 model's mAP50 change and its worst class's AP50 change "
        "(points, each model at its own thresholds for 5% escape under the line's rule); "
        "'+ N float': the N convs with the noisiest quantized input kept in float (`--float-sensitive N`)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished `defectdet demo` run folders")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(VARIANTS),
        type=lambda t: variant(t) and t,
        help="METHOD or METHOD:N (N sensitive convs kept float); default: %(default)s",
    )
    p.add_argument("--calib-images", type=int, default=64, help="the demo's default")
    p.add_argument("--out", default=str(ROOT / "runs" / "int8_methods.jsonl"))
    p.add_argument("--page", help="rewrite this docs page's int8-methods block (docs/demo.md)")
    a = p.parse_args(argv)
    out = Path(a.out)
    rows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.is_file() else []
    done = {(r["run"], r["method"]) for r in rows}
    try:
        for run in map(Path, a.runs):
            for m in a.methods:
                if (str(run), m) in done:
                    continue
                rows.append(measure(run, m, a.calib_images, out.with_suffix("")))
                atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
        wanted = {str(Path(r)) for r in a.runs}
        text = table([r for r in rows if r["run"] in wanted], tuple(a.methods))
        if a.page:
            update_page(Path(a.page), MARKER, text)
    except DefectdetError as e:
        print(f"int8_methods: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
