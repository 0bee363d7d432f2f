"""The table of one `make demo` run in docs/demo.md, written from that run's files (never typed).

    defectdet demo                                  # writes runs/demo/summary.yaml (+ the INT8 gate report)
    python bench/demo_table.py --page docs/demo.md  # rewrites the page's block between the demo-table markers

Reads ``<run>/summary.yaml`` (what ``defectdet demo`` measured: settings, what ``auto`` resolved to,
per-class AP50, part KPIs, parity, conveyor scoring, step times) and the INT8 gate report it names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality_report import update_page  # noqa: E402
from defectdet.config import load_yaml  # noqa: E402
from defectdet.errors import ConfigError  # noqa: E402

MARKER = "demo-table"
NEEDED = (
    "settings",
    "train",
    "steps",
    "per_class",
    "map50",
    "map50_95",
    "escape_rate",
    "overkill_rate",
    "escapes",
    "overkills",
    "n_defective",
    "n_clean",
    "parity",
    "gate",
    "inspect",
    "seconds",
    "val_imgsz",
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _loss(t: dict) -> str:
    """``focal γ=1 cls=4``: the loss ``defectdet train`` resolved."""
    return " ".join(
        [str(t.get("cls_loss"))]
        + [f"{g}={t[k]:g}" for k, g in (("gamma", "γ"), ("cls", "cls")) if t.get(k) is not None]
    )


def _step(summary: dict, prefix: str) -> float:
    return next(float(v) for k, v in summary["steps"].items() if k.startswith(prefix))


def _gate_cell(summary: dict, gate: dict | None) -> str:
    decision = {"pass": "**passed**", "refused": "**refused**", "forced": "**refused, forced**"}[
        summary["gate"]
    ]
    if gate is None:
        return decision
    checks = {c["metric"]: c for c in gate["checks"]}
    m = checks["mAP50"]
    parts = [f"mAP50 {m['int8']:.3f} vs {m['fp32']:.3f}"]
    for key in ("escape", "overkill"):
        if (c := checks.get(f"{key}_rate")) is not None:
            parts.append(f"{key} {_pct(c['int8'])} vs {_pct(c['fp32'])}")
    per_class = [c for name, c in checks.items() if name.startswith("AP50[")]
    if per_class:
        worst = max(per_class, key=lambda c: c["loss"])
        lo, hi = (round(-x, 1) + 0.0 for x in (worst["loss"], min(c["loss"] for c in per_class)))  # no -0.0
        parts.append(
            f"per-class AP50 change {lo:+.1f} to {hi:+.1f} points"
            + (f" (worst {worst['metric'][5:-1]})" if worst["loss"] > 0 else "")
        )
    text = f"{decision}: " + ", ".join(parts)
    if gate.get("reasons"):
        text += "; refused for: " + "; ".join(gate["reasons"])
    noise = [w for w in gate.get("warnings", []) if "includes no loss" in w]
    if (
        noise
    ):  # over a limit, but the paired bootstrap interval includes no loss (defectdet.export.gate_bootstrap)
        text += "; within noise, not refused: " + "; ".join(w.split(": not refused")[0] for w in noise)
    if summary["gate"] != "pass":
        text += "; the demo deploys the FP32 `model.onnx`, as a line would"
    return text


def table(summary: dict[str, Any], gate: dict[str, Any] | None) -> str:
    """The markdown table of one demo run."""
    missing = [k for k in NEEDED if k not in summary]
    if missing:
        raise ConfigError(
            f"summary.yaml: missing {', '.join(missing)}; expected the file `defectdet demo` writes "
            "(re-run the demo with this version)"
        )
    s, t, line = summary["settings"], summary["train"], summary["inspect"]
    n_val = summary["n_defective"] + summary["n_clean"]
    n_train = s["images"] - n_val
    window = (
        f"{s['imgsz']} px native-scale windows" if t.get("crop") == "native" else f"{s['imgsz']} px images"
    )
    aps = sorted(summary["per_class"].items(), key=lambda kv: -kv[1]["ap50"])
    ap_text = ", ".join(f"{name} {c['ap50']:.2f}" for name, c in aps)
    labels = [c["labels"] for c in summary["per_class"].values()]
    par = summary["parity"]
    calib = f"{s['calib_images']} calibration images, {s['quant_method']}"
    if s.get("float_sensitive"):  # runs made before the key existed have none
        calib += f", the {s['float_sensitive']} convs with the noisiest input in float"
    rows = [
        (
            "train ("
            + ", ".join(
                [
                    f"{s['epochs']} epochs",
                    f"{n_train} parts",
                    window,
                    f"paste {s['paste']:g}",
                    f"sampling={t.get('sampling')}",
                    _loss(t),
                    f"{t.get('optimizer')} lr0 {t.get('lr0')}, a step every {t.get('nbs')} images",
                    f"{t.get('threads', '?')} threads",
                ]
            )
            + ")",
            f"{_step(summary, '2.'):.0f} s; mAP50 {summary['map50']:.3f}, mAP50-95 {summary['map50_95']:.3f} "
            f"on {n_val} val parts at {summary['val_imgsz']} px (AP50: {ap_text}; "
            f"{min(labels)}–{max(labels)} labels per class)",
        ),
        (
            f"thresholds calibrated for ≤ {s['target_escape']:.0%} escape (any detection rejects)",
            f"escape **{_pct(summary['escape_rate'])}** ({summary['escapes']} of {summary['n_defective']} "
            f"defective parts), overkill **{_pct(summary['overkill_rate'])}** ({summary['overkills']} of "
            f"{summary['n_clean']} good parts)",
        ),
        (
            "export",
            f"max \\|ONNX − PyTorch\\|: {par['boxes_max_abs']:.2g} px (boxes), {par['scores_max_abs']:.1g} "
            "(scores)",
        ),
        (
            f"INT8 Q/DQ (TensorRT form, {calib}) + gate (`--recalibrate {s['target_escape']:g} --escape-rule "
            "any`)",
            _gate_cell(summary, gate),
        ),
        (
            f"inspect `parts.mp4` ({line['frames']} frames, {line['defective_parts'] + line['good_parts']} "
            f"parts, {line['defective_parts']} defective)",
            f"{line['fps']:.0f} frames/s, {line['events_written']} NG events; on the frames where a part "
            f"rests under the camera: {line['caught']} of {line['defective_parts']} defective parts "
            f"rejected, {line['false_rejects']} of {line['good_parts']} good parts rejected",
        ),
        ("total", f"{summary['seconds']:.0f} s"),
    ]
    return "\n".join(["| step | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def load_run(run: Path) -> tuple[dict, dict | None]:
    path = run / "summary.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected the summary of a `defectdet demo` run (--run)")
    summary = load_yaml(path, kind="demo summary")
    gate_path = summary.get("gate_report")
    gate = None
    if gate_path:
        try:
            gate = json.loads(Path(gate_path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{gate_path}: cannot read the INT8 gate report ({e.__class__.__name__}); "
                "expected the JSON `defectdet gate` writes"
            ) from None
    return summary, gate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/demo", help="the demo's output folder (default runs/demo)")
    p.add_argument(
        "--page", "--readme", dest="page", help="rewrite this docs page's demo-table block (docs/demo.md)"
    )
    a = p.parse_args(argv)
    try:
        text = table(*load_run(Path(a.run)))
        if a.page:
            update_page(Path(a.page), MARKER, text)
    except ConfigError as e:
        print(f"demo_table: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
