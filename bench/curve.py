"""The budget x capacity curve: the defaults' quality per model and training budget, per data set.

    python bench/curve.py --data ../shared/data/kolektorsdd/data.yaml --kfold 5 \\
        --models configs/models/defectdet-pico.yaml yolo11n.yaml --scales 1 2 4 \\
        --out runs/bench_curve --archive bench/results/curve_runs --page docs/quality.md

Each cell (data set, model, budget) is one ``bench/quality.py`` run of the ``recipe`` arm (the defaults)
at ``scale`` times the budget's epochs, in its own cache folder ``<out>/<model>-e<epochs>/``: the same
resumable runner (an interrupted training goes on from ``last.pt``; a finished one is cached), so a
cell may take several sessions, and ``--archive`` keeps each finished cell's small JSON to commit.
Cells run cheapest first (every model at 1x before any at 2x), so an interrupted curve still has its
first column. ``--kfold K`` makes every cell a K-fold cross-validation (a small set: KolektorSDD).

The table reads a cell's quality as mAP50 (median over seeds, or pooled over folds) and the line's part
KPIs at thresholds calibrated for 1 % escape on other parts (cross-fitted over folds with ``--kfold``;
half/half within val otherwise), with the wall time and training speed it cost on this machine. It tells
a line engineer what a longer (GPU) run buys, and whether the model's capacity or the budget is the wall.
``--report-only`` rebuilds the table from ``--out`` (or from the archive given as ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quality as Q  # noqa: E402
from bench.quality_report import update_page  # noqa: E402
from defectdet.config import atomic_write_text  # noqa: E402
from defectdet.errors import ConfigError  # noqa: E402

ARM = "recipe"  # the defaults


def cell_name(model: str, epochs: int) -> str:
    return f"{Path(model).stem}-e{epochs}"


def cells(models: list[str], scales: list[float], base_epochs: int) -> list[tuple[str, float, int]]:
    """(model, scale, epochs), cheapest first: every model at the smallest scale before any at the next."""
    out = []
    for s in sorted(set(scales)):
        if s <= 0:
            raise ConfigError(f"--scales {s:g}: expected a positive multiple of the budget's epochs")
        out += [(m, s, max(1, round(base_epochs * s))) for m in models]
    return out


def _quality_args(opts: argparse.Namespace, model: str, epochs: int, cell: str) -> list[str]:
    args = ["--data", *opts.data, "--arms", ARM, "--budget", opts.budget, "--model", model]
    args += ["--epochs", str(epochs), "--out", str(Path(opts.out) / cell), "--device", opts.device]
    for k in ("seeds", "kfold", "imgsz", "batch", "workers", "max_val_images", "synthetic_images"):
        v = getattr(opts, k)
        if v is not None:
            args += [f"--{k.replace('_', '-')}", *map(str, v if isinstance(v, list) else [v])]
    if opts.archive:
        args += ["--archive", str(Path(opts.archive) / cell)]
    return args


KFOLD_RULES = (  # the pooled k-fold rows: (key in kfold.json, the table's words)
    ("line_part90", "part score, escape @1% from defective parts, 90% conf., cross-fitted"),
    ("overkill_part90", "part score, overkill @5% from good parts, 90% conf., cross-fitted"),
)


def _kfold_rows(cell: str, res: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pooled rows of a k-fold cell: one per decision rule of :data:`KFOLD_RULES` it holds."""
    first, rows = res[0], []
    budget = first.get("budget") or first.get("fingerprint", {})
    k = first["kfold"]
    for key, words in KFOLD_RULES:
        if key not in k:
            continue
        rule = k[key]
        rows.append(
            {
                "cell": cell,
                "data": first["data_tag"],
                "model": Path(str(budget.get("model"))).stem,
                "epochs": budget.get("epochs"),
                "map50": k["map50_pooled"],
                "escapes": rule["escapes"],
                "n_defective": rule["n_defective"],
                "overkills": rule["overkills"],
                "n_clean": rule["n_clean"],
                "rule": words,
                "wall_s": k.get("wall_s"),
                "ips": [v for v in k.get("images_per_s", []) if v],
                "load": [v for v in k.get("load_1m", []) if v is not None],
                "seeds": len(res),
            }
        )
    return rows


PLAIN_RULES = (  # the rows of a plain (per-seed) cell: (key suffix in result.json, the table's words)
    ("line_any", "per class, half/half"),
    ("line_good", "part score, overkill @5% from good parts, 90% conf., half/half"),
)


def _rows(cell: str, res: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A cell's rows of one data set (result.json per seed): one per rule of :data:`PLAIN_RULES` that
    every seed's result holds, medians over the seeds."""
    first, rows = res[0], []
    budget = first.get("budget") or first.get("fingerprint", {})
    for key, words in PLAIN_RULES:
        if not all(f"calibration_{key}" in r for r in res):
            continue
        cal = [r[f"calibration_{key}"] for r in res]
        overkill = [r[f"overkill_{key}"] for r in res]
        if key == "line_good" and any(o is None for o in overkill):
            continue  # no good parts to set it from
        rows.append(
            {
                "cell": cell,
                "data": first["data_tag"],
                "model": Path(str(budget.get("model"))).stem,
                "epochs": budget.get("epochs"),
                "map50": float(np.median([r["map50"] for r in res])),
                "escape": float(np.median([r[f"escape_{key}"] for r in res])),
                "overkill": None if None in overkill else float(np.median(overkill)),
                "rule": words,
                "wall_s": float(np.median([r.get("wall_s") or 0 for r in res])),
                "ips": [r["images_per_s"] for r in res if r.get("images_per_s")],
                "load": [r["load_1m"] for r in res if r.get("load_1m") is not None],
                "seeds": len(res),
                "reachable": all(c.get("reachable", True) for c in cal),
            }
        )
    return rows


def _folds_row(cell: str, tag: str, seed: str, folds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The finished folds of a k-fold cell, each scored on its own held-out parts (thresholds calibrated
    on one half of the fold, counted on the other, both ways round): comparable fold by fold across cells
    while a cell is still training."""
    first = folds[min(folds)]
    budget = first.get("budget") or first.get("fingerprint", {})
    cal = [folds[f]["calibration_line_any"] for f in sorted(folds)]
    return {
        "cell": cell,
        "data": tag,
        "model": Path(str(budget.get("model"))).stem,
        "epochs": budget.get("epochs"),
        "map50": float(np.median([folds[f]["map50"] for f in folds])),
        "folds": {f: folds[f]["map50"] for f in sorted(folds)},
        "seed": seed,
        **{k: sum(c[k] for c in cal) for k in ("escapes", "n_defective", "overkills", "n_clean")},
        "rule": "per class, half/half within each fold",
        "wall_s": sum(folds[f].get("wall_s") or 0 for f in folds),
        "ips": [folds[f]["images_per_s"] for f in folds if folds[f].get("images_per_s")],
        "load": [folds[f]["load_1m"] for f in folds if folds[f].get("load_1m") is not None],
        "seeds": 1,
    }


def collect(out: Path) -> list[dict[str, Any]]:
    """Every cell under ``out``: one row per (cell, data set); a k-fold cell also gets a row of its
    finished folds (all of them, or those done so far)."""
    rows = []
    for cell in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        done: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}  # (set, seed) -> fold -> result
        for p in sorted(cell.glob(f"*-kfold*-fold*/{ARM}/seed*/result.json")):
            tag, _, fold = p.parents[2].name.rpartition("-fold")
            if fold.isdigit():
                done.setdefault((tag, p.parent.name), {})[int(fold)] = json.loads(p.read_text())
        rows += [_folds_row(cell.name, tag, seed, folds) for (tag, seed), folds in sorted(done.items())]
        kfolds = sorted(cell.glob(f"*-kfold*/{ARM}/seed*/kfold.json"))
        for tag in sorted({p.parents[2].name for p in kfolds}):
            res = [json.loads(p.read_text()) for p in kfolds if p.parents[2].name == tag]
            rows += _kfold_rows(cell.name, res)
        plain = [
            p for p in sorted(cell.glob(f"*/{ARM}/seed*/result.json")) if "-kfold" not in p.parents[2].name
        ]
        for tag in sorted({p.parents[2].name for p in plain}):
            res = [json.loads(p.read_text()) for p in plain if p.parents[2].name == tag]
            rows += _rows(cell.name, res)
    order = {words: i for i, (_, words) in enumerate(KFOLD_RULES + PLAIN_RULES)}
    return sorted(
        rows, key=lambda r: (r["data"], r["model"], "folds" in r, order.get(r["rule"], 0), r["epochs"] or 0)
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: data x model x epochs, mAP50 and the line's part KPIs, what the cell cost."""
    head = (
        "| data | model | epochs | runs | mAP50 | escape | overkill | decision rule | wall "
        "| train img/s (load) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "escapes" in r:
            esc = f"{r['escapes']}/{r['n_defective']} ({r['escapes'] / r['n_defective']:.1%})"
            ovk = f"{r['overkills']}/{r['n_clean']} ({r['overkills'] / r['n_clean']:.1%})"
            runs = f"{r['seeds']} seed × folds, pooled"
            if "folds" in r:
                runs = "fold " + ", ".join(f"{f}: {m:.3f}" for f, m in r["folds"].items()) + " (median)"
                runs = runs if r["seed"] == "seed0" else f"{r['seed']}, {runs}"
        else:
            esc = f"{r['escape']:.1%}"
            ovk = f"{r['overkill']:.1%}" if r["overkill"] is not None else "n/a (no good parts)"
            runs = f"{r['seeds']} seed{'s' if r['seeds'] > 1 else ''} (median)"
        ips = f"{np.median(r['ips']):.1f}" if r["ips"] else "n/a"
        load = f" ({np.median(r['load']):.1f})" if r["load"] else ""
        wall = f"{r['wall_s'] / 60:.0f} min" if r.get("wall_s") else "n/a"
        lines.append(
            f"| {r['data']} | {r['model']} | {r['epochs']} | {runs} | {r['map50']:.3f} | {esc} | {ovk} | "
            f"{r['rule']} | {wall} | {ips}{load} |"
        )
    lines.append(
        "\nthresholds calibrated on parts not counted: for 1 % escape on the defective parts, or (rows so "
        "marked) for at most 5 % overkill on the good parts, escape then counted; a part is rejected on any "
        "detection above its threshold (the line's rule). load: median 1-minute load during training "
        "(2 = the run alone on 2 cores)."
    )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/curve.py", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=Q.DEFAULT_DATA[:1], help="data.yaml files, or 'synthetic'")
    p.add_argument(
        "--models",
        nargs="+",
        default=[Q.BUDGETS["cpu"]["model"], "yolo11n.yaml"],
        help="model yamls (default: defectdet-pico and yolo11n)",
    )
    p.add_argument("--scales", nargs="+", type=float, default=[1, 2, 4], help="multiples of the epochs")
    p.add_argument("--budget", choices=sorted(Q.BUDGETS), default="cpu", help="the 1x budget")
    p.add_argument("--epochs", type=int, help="the 1x epochs (default: the budget's)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the budget's)")
    p.add_argument("--kfold", type=int, help="every cell a K-fold cross-validation (bench/kfold.py)")
    for k in ("imgsz", "batch", "workers", "max-val-images", "synthetic-images"):
        p.add_argument(f"--{k}", type=int, help=f"passed to bench/quality.py --{k}")
    p.add_argument("--device", default="cpu", help="cpu, 0, ...")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_curve"), help="one cache folder per cell")
    p.add_argument("--archive", help="keep each cell's small JSON here (bench/quality.py --archive)")
    p.add_argument("--page", help="write the table into this docs page between the marker lines")
    p.add_argument("--marker", default="curve-table", help="the marker in --page (default: curve-table)")
    p.add_argument("--report-only", action="store_true", help="rebuild the table from --out")
    p.add_argument(
        "--repool",
        action="store_true",
        help="with --report-only: recompute every finished k-fold's pooled result from its folds' kept "
        "detections first (a new decision rule on old runs)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    out = Path(opts.out).resolve()
    if opts.repool and not opts.report_only:
        raise ConfigError("--repool: expected together with --report-only")
    if opts.repool:
        from bench import kfold as KF

        for p in sorted(out.glob(f"*/*-kfold*/{ARM}/seed*/kfold.json")):
            try:
                KF.repool(p, Q.LINE_OVERKILL)
            except FileNotFoundError as e:
                raise ConfigError(str(e)) from None
            print(f"repooled: {p}")
    if not opts.report_only:
        base = opts.epochs or Q.BUDGETS[opts.budget]["epochs"]
        for model, scale, epochs in cells(opts.models, opts.scales, base):
            cell = cell_name(model, epochs)
            print(f"curve: {cell} ({scale:g}x {base} epochs)")
            Q.main(_quality_args(opts, model, epochs, cell))
    text = table(collect(out))
    atomic_write_text(out / "curve.md", text)
    print(text)
    if opts.page:
        print(f"written: {update_page(Path(opts.page), opts.marker, text)} ({opts.marker})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"bench/curve.py: error: {e}", file=sys.stderr)
        sys.exit(2)
