"""The sampler x focal grid: defect sampler share x focal gamma on top of the defaults, per data set.

    python bench/grid.py --data ../shared/data/deeppcb/data_rare.yaml --seeds 0 1 2 \\
        --out /work/bench_grid --archive bench/results/grid_runs --page docs/quality.md
    python bench/grid.py --data ../shared/data/kolektorsdd/data.yaml --kfold 5 \\
        --out /work/bench_grid --archive bench/results/grid_runs --page docs/quality.md
    python bench/grid.py --report-only --out bench/results/grid_runs --page docs/quality.md

defectdet has two answers to class imbalance: the defect sampler (``sampling=defect``: a share
``defect_fraction`` of every epoch is drawn from defective images) and the focal family's focusing
(gamma). The grid trains the 9 arms ``recipe+df{10,25,50}+g{0,1,2}`` of ``bench/quality.py``: the
``recipe`` arm (``defectdet train``'s defaults: crop, paste, optimizer, ...) with only the sampler's
share (0.1 / 0.25 / 0.5) and the focal loss (gamma 0 / 1 / 2 at alpha 0.5, cls gain 1 / 4 / 4 as the
presets for that gamma) pinned. It is one resumable ``bench/quality.py`` run: each arm/seed (or fold) is
cached in ``<out>`` as that script caches it, an interrupted training goes on from ``last.pt``, and
``--archive`` keeps each finished arm's small JSON to commit, which a later session reads as done. The
arms run in :data:`ORDER`, the comparisons that decide most first; ``--cells`` runs a subset.

Each data set gets a 3 x 3 table (rows: defect_fraction; columns: gamma): mAP50 (pooled over the folds
with ``--kfold``, the median over seeds otherwise) and the line's part KPIs at per-class thresholds
calibrated for 1 % escape on parts not counted, a part rejected on any detection (cross-fitted over the
folds with ``--kfold``; half/half within val otherwise), as escapes and overkills out of the parts counted.
The cell that ``cls_loss=auto`` / ``sampling=auto`` resolve to on that data set today
(:func:`auto_pick`, recorded in ``<out>/<set>/grid_auto.json`` when the grid runs) is marked; cells not
run yet say so, so a partial grid is reported as it fills in.
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

FRACTIONS = ("df10", "df25", "df50")  # rows: bench/quality.py FEATURES, sampling=defect at this share
GAMMAS = ("g0", "g1", "g2")  # columns: focal gamma 0 / 1 / 2 at alpha 0.5
BASE = "recipe"  # the defaults
ORDER = (  # today's default first, then focusing at that share, then the share at gamma 0, then the rest
    "df50+g0",
    "df50+g1",
    "df50+g2",
    "df25+g0",
    "df10+g0",
    "df25+g1",
    "df25+g2",
    "df10+g1",
    "df10+g2",
)
AUTO_FILE = "grid_auto.json"
NO_RESULTS = "No cell of the sampler × focal grid has run yet."


def arm_name(cell: str) -> str:
    """``df25+g1`` -> ``recipe+df25+g1`` (the bench/quality.py arm)."""
    return f"{BASE}+{cell}"


def cell_settings(cell: str) -> dict[str, Any]:
    """The keys a cell pins over the defaults (what ``bench/quality.py`` gives its arm)."""
    df, g = cell.split("+")
    return {**Q.FEATURES[df], **Q.FEATURES[g]}


def pick_cells(cells: list[str] | None) -> list[str]:
    """The cells to run, in :data:`ORDER`; ConfigError on a name outside the grid."""
    bad = [c for c in cells or [] if c not in ORDER]
    if bad:
        raise ConfigError(
            f"--cells {' '.join(bad)}: expected cells of the grid, df10|df25|df50 + g0|g1|g2 (e.g. df25+g1)"
        )
    return [c for c in ORDER if cells is None or c in cells]


def match_cell(pick: dict[str, Any]) -> str | None:
    """The grid cell whose pinned keys equal the resolved settings ``pick``; None when outside the grid."""
    for cell in ORDER:
        if all(pick.get(k) == v for k, v in cell_settings(cell).items()):
            return cell
    return None


def auto_pick(data: str, imgsz: int) -> dict[str, Any]:
    """What ``defectdet train``'s defaults resolve to on ``data`` (its train split) at ``imgsz``: the
    sampler (``sampling=auto``, ``defect_fraction``'s default), the loss ``cls_loss=auto`` recommends for
    the data as that sampler shows it, and the grid cell they make (None: outside the grid)."""
    from defectdet.data.stats import recommend_preset
    from defectdet.recipe import check_recipe, resolve_recipe
    from defectdet.train import load_settings

    recipe, stats = resolve_recipe(check_recipe({}), data, imgsz, need_stats=True)
    rec = recommend_preset(stats)
    preset = load_settings(rec["config"], [])
    pick = {
        "sampling": recipe.sampling,
        "defect_fraction": recipe.defect_fraction,
        **{k: preset.get(k) for k in ("cls_loss", "gamma", "alpha", "cls")},
        "preset": rec["config"],
        "rule": rec["rule"],
        "crop": recipe.crop,
        "imgsz": imgsz,
        "data": str(data),
    }
    return {**pick, "cell": match_cell(pick)}


# ----------------------------------------------------------------------------- results
def _kfold_tag(tag: str) -> tuple[str, int] | None:
    """``kolektorsdd-data-kfold5`` -> (``kolektorsdd-data``, 5); None for a set without k-fold."""
    base, sep, k = tag.rpartition("-kfold")
    return (base, int(k)) if sep and k.isdigit() else None


def _run(res: dict[str, Any]) -> dict[str, Any]:
    """One run's numbers: a seed's result.json or a k-fold kfold.json (the line's per-class rule)."""
    if "kfold" in res:
        m, cal = res["kfold"]["map50_pooled"], res["kfold"]["line"]
    else:
        m, cal = res["map50"], res["calibration_line_any"]
    keys = ("escapes", "n_defective", "overkills", "n_clean")
    return {"map50": m, **{k: cal[k] for k in keys}, "reachable": bool(cal.get("reachable", True))}


def collect(dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """{set tag: {"runs": {cell: {seed: run}}, "folds": {cell: folds done}, "auto": grid_auto.json or
    None, "kfold": K or None}} from the caches (``--out``) and archives in ``dirs``; a run found in an
    earlier folder of ``dirs`` wins."""
    sets: dict[str, dict[str, Any]] = {}

    def entry(tag: str) -> dict[str, Any]:
        k = _kfold_tag(tag)
        return sets.setdefault(tag, {"runs": {}, "folds": {}, "auto": None, "kfold": k[1] if k else None})

    for d in [d for d in dirs if d.is_dir()]:
        for p in sorted(d.glob(f"*/{AUTO_FILE}")):
            e = entry(p.parent.name)
            e["auto"] = e["auto"] or json.loads(p.read_text())
        for cell in ORDER:
            arm = arm_name(cell)
            for p in sorted(d.glob(f"*/{arm}/seed*/result.json")) + sorted(
                d.glob(f"*/{arm}/seed*/kfold.json")
            ):
                tag = p.parents[2].name
                if "-kfold" in tag and p.name == "result.json":  # one fold of a k-fold set
                    base, _, fold = tag.rpartition("-fold")
                    if fold.isdigit() and _kfold_tag(base):
                        entry(base)["folds"].setdefault(cell, set()).add((p.parent.name, int(fold)))
                    continue
                entry(tag)["runs"].setdefault(cell, {}).setdefault(
                    p.parent.name, _run(json.loads(p.read_text()))
                )
    return sets


# ----------------------------------------------------------------------------- table
def _median(values: list[float]) -> str:
    return f"{float(np.median(values)):g}"


def cell_text(runs: dict[str, dict[str, Any]], most: int) -> str:
    """``mAP50 0.412 · escape 1/52 · overkill 20/347``: medians over the runs (seeds); ``most``: the
    runs of the table's fullest cell (fewer here are said); † marks an unreachable escape target."""
    r = list(runs.values())
    text = (
        f"mAP50 {np.median([x['map50'] for x in r]):.3f} · escape {_median([x['escapes'] for x in r])}/"
        f"{_median([x['n_defective'] for x in r])} · overkill {_median([x['overkills'] for x in r])}/"
        f"{_median([x['n_clean'] for x in r])}"
    )
    if not all(x["reachable"] for x in r):
        text += " †"
    return text + (f" ({len(r)} of {most} seeds)" if len(r) < most else "")


def _auto_line(auto: dict[str, Any] | None) -> str:
    if auto is None:
        return "auto: not recorded (written when the grid runs on this set)."
    sampler = (
        f"sampling=defect, defect_fraction={auto['defect_fraction']:g}"
        if auto["sampling"] == "defect"
        else f"sampling={auto['sampling']}"
    )
    where = "= the cell marked **auto**" if auto.get("cell") else "= outside this grid (no cell marked)"
    return (
        f"auto (`defectdet train`'s defaults on this set's train split at imgsz {auto['imgsz']}): {sampler}, "
        f"{auto['preset']} (γ={auto['gamma']:g}, α={auto['alpha']:g}, cls {auto['cls']:g}) {where}. "
        f"Its reason: {auto['rule'].split(' Rule: ')[0].rstrip('.')}."
    )


def set_table(tag: str, s: dict[str, Any]) -> str:
    """One set's 3 x 3 markdown table (rows defect_fraction, columns gamma) and its auto line."""
    k, auto_cell = s["kfold"], (s["auto"] or {}).get("cell")
    most = max((len(r) for r in s["runs"].values()), default=0)
    what = f"{k}-fold, mAP50 pooled over the folds" if k else "mAP50: median over seeds"
    lines = [
        f"**{tag}** ({len(s['runs'])} of {len(ORDER)} cells run; {what})",
        "",
        "| defect_fraction | γ=0 (α 0.5, cls 1) | γ=1 (α 0.5, cls 4) | γ=2 (α 0.5, cls 4) |",
        "|---|---|---|---|",
    ]
    for df in FRACTIONS:
        row = []
        for g in GAMMAS:
            cell = f"{df}+{g}"
            if cell in s["runs"]:
                text = cell_text(s["runs"][cell], most)
            elif cell in s["folds"]:
                text = f"not run ({len(s['folds'][cell])} of {k} folds trained)"
            else:
                text = "not run"
            row.append(f"**auto:** {text}" if cell == auto_cell else text)
        lines.append(f"| {Q.FEATURES[df]['defect_fraction']:g} | " + " | ".join(row) + " |")
    return "\n".join([*lines, "", _auto_line(s["auto"])])


def table(sets: dict[str, dict[str, Any]]) -> str:
    """Every set's grid table, then what the numbers are; one line when no cell has run."""
    if not sets:
        return NO_RESULTS + "\n"
    parts = [set_table(tag, sets[tag]) for tag in sorted(sets)]
    parts.append(
        "escape / overkill: parts out of the parts counted, at per-class thresholds calibrated for 1 % "
        "escape on parts not counted (cross-fitted: the other folds with --kfold, the other half of val "
        "otherwise), a part rejected on any detection above its class threshold (the line's rule); with "
        "seeds, the median over seeds. †: the 1 % target was not reachable on some calibration parts."
    )
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/grid.py", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=Q.DEFAULT_DATA[:1], help="data.yaml files, or 'synthetic'")
    p.add_argument(
        "--cells", nargs="+", help=f"a subset of the grid (default: all, in the order {' '.join(ORDER)})"
    )
    p.add_argument("--budget", choices=sorted(Q.BUDGETS), default="cpu", help="bench/quality.py's budget")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the budget's)")
    p.add_argument("--kfold", type=int, help="K-fold cross-validation per cell (bench/kfold.py)")
    for k in ("epochs", "imgsz", "batch", "workers", "max-val-images", "synthetic-images"):
        p.add_argument(f"--{k}", type=int, help=f"passed to bench/quality.py --{k}")
    p.add_argument("--model", help="passed to bench/quality.py --model")
    p.add_argument("--device", default="cpu", help="cpu, 0, ...")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_grid"), help="the runs' cache folder")
    p.add_argument("--archive", help="keep each arm's small JSON here (bench/quality.py --archive)")
    p.add_argument("--page", help="write the tables into this docs page between the marker lines")
    p.add_argument("--marker", default="grid-table", help="the marker in --page (default: grid-table)")
    p.add_argument("--report-only", action="store_true", help="rebuild the tables from --out and --archive")
    return p


def _quality_args(opts: argparse.Namespace, cells: list[str]) -> list[str]:
    args = ["--data", *opts.data, "--arms", *map(arm_name, cells), "--budget", opts.budget]
    args += ["--out", opts.out, "--device", opts.device]
    for k in ("seeds", "kfold", "epochs", "imgsz", "batch", "workers", "model", "max_val_images"):
        v = getattr(opts, k)
        if v is not None:
            args += [f"--{k.replace('_', '-')}", *map(str, v if isinstance(v, list) else [v])]
    if opts.synthetic_images is not None:
        args += ["--synthetic-images", str(opts.synthetic_images)]
    return args + (["--archive", opts.archive] if opts.archive else [])


def record_auto(opts: argparse.Namespace, qargs: list[str]) -> None:
    """Write each set's :func:`auto_pick` (at the budget's imgsz) to ``<out>/<set>/grid_auto.json`` and
    to the archive: what today's defaults pick, beside the cells that test it."""
    qopts = Q._parser().parse_args(qargs)
    imgsz = opts.imgsz or Q.BUDGETS[opts.budget]["imgsz"]
    for d in opts.data:
        data = Q._resolve_data(d, Path(opts.out), qopts, imgsz)
        if data is None:
            continue
        tag = Q.data_tag(data) + (f"-kfold{opts.kfold}" if opts.kfold else "")
        text = json.dumps(auto_pick(data, imgsz), indent=1) + "\n"
        for where in [Path(opts.out)] + ([Path(opts.archive)] if opts.archive else []):
            atomic_write_text(where / tag / AUTO_FILE, text)


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    opts.out = str(Path(opts.out).resolve())
    cells = pick_cells(opts.cells)
    if not opts.report_only:
        qargs = _quality_args(opts, cells)
        record_auto(opts, qargs)
        Q.main(qargs)
    dirs = [Path(opts.out)] + ([Path(opts.archive)] if opts.archive else [])
    text = table(collect(dirs))
    atomic_write_text(Path(opts.out) / "grid.md", text)
    print(text)
    if opts.page:
        print(f"written: {update_page(Path(opts.page), opts.marker, text)} ({opts.marker})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"bench/grid.py: error: {e}", file=sys.stderr)
        sys.exit(2)
