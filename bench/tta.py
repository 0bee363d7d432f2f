"""Test-time views on a trained model: mAP50, line-rule escape/overkill and frames/s, off vs flips vs tiles.

    python bench/tta.py --weights RUN_DIR --data FOLD/data.yaml          # one held-out split
    python bench/tta.py --weights RUN0 RUN1 ... --data FOLD0/data.yaml FOLD1/data.yaml ...   # k folds
    python bench/tta.py --weights model.onnx --data data.yaml --tiles 2x2 --page docs/tta.md

Each ``--weights`` (a ``bench/quality.py`` run folder: its ``weights/last.pt``, the weights that script
scored; a ``.pt``; or an exported ``.onnx``/``.engine``) is scored on the ``val`` split of the
``--data`` at the same position (a k-fold run: fold f's model on fold f's held-out parts). Every arm
runs the same code as ``defectdet val --tta/--tiles`` (:mod:`defectdet.evaluate_views`: a ``.pt`` on
ultralytics, an ``.onnx`` on the station's runtime) at the confidence floor 0.001:

* ``off``: the frame once; ``hflip`` / ``hvflip``: the frame and its mirrors (2 / 3 passes);
* ``tiles``: ``--tiles`` (default ``native``: tiles of exactly the model input's size; a ``.pt`` from a
  ``crop=native`` run then gets windows of its training size, unscaled: the scale it learnt);
* ``both``: ``hflip`` on every tile.

**Metrics**, from :mod:`bench.quality` and :mod:`bench.kfold` (no second implementation): mAP50 of the
pooled held-out detections; the line's rule (any detection rejects a part) at per-class thresholds
calibrated for ``--target-escape`` (default 1 %), cross-fitted: on one split, thresholds fitted on
one half of the parts count the other (``cross_calibrated_kpis``); on k folds, fitted on the other
folds (``cross_fitted``). **frames/s**: ``--timed`` frames of the first split, held in memory, run
``--repeats`` times after one warm-up frame; the median pass, on this machine's CPU (the load average
is recorded). Writes ``--out`` (default ``bench/results/tta.json``; rows of other ``--tag`` values kept)
and, with ``--page``, the table between ``<!-- tta-table:start/end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import (  # noqa: E402
    KPI_KEYS,
    LINE_ESCAPE,
    LINE_OVERKILL,
    cross_calibrated_kpis,
    data_tag,
    good_part_kpis,
)
from bench.quality_report import update_page  # noqa: E402
from defectdet.config import atomic_write_text  # noqa: E402
from defectdet.errors import ConfigError, DefectdetError  # noqa: E402

ARMS = {  # arm -> (tta, tiles: True = the --tiles setting)
    "off": ("none", False),
    "hflip": ("hflip", False),
    "hvflip": ("hvflip", False),
    "tiles": ("none", True),
    "both": ("hflip", True),
}
DEFAULT_ARMS = ("off", "hflip", "tiles", "both")
FLOOR = 0.001  # the confidence floor detections are collected at (defectdet val's)


def resolve_weights(path: str) -> Path:
    """A run folder -> its ``weights/last.pt`` (what bench/quality.py scored), else ``weights/best.pt``;
    a model file -> itself."""
    p = Path(path)
    if p.is_dir():
        found = next(
            (p / "weights" / n for n in ("last.pt", "best.pt") if (p / "weights" / n).is_file()), None
        )
        if found is None:
            raise ConfigError(f"--weights {p}: no weights/last.pt or weights/best.pt in this run folder")
        return found
    if not p.is_file():
        raise ConfigError(f"--weights {p}: not found; expected a run folder, a .pt, .onnx or .engine")
    return p


def _frames(images: list[Path], n: int) -> list:
    from defectdet.evaluate_views import read_image

    return [read_image(p) for p in images[:n]]


def frames_per_s(detector: Any, frames: list, repeats: int) -> list[float]:
    """frames/s of each of ``repeats`` passes over ``frames`` (after one warm-up frame)."""
    detector(frames[0])
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f in frames:
            detector(f)
        out.append(len(frames) / (time.perf_counter() - t0))
    return out


def run_arm(arm: str, pairs: list[tuple[Path, str]], opts: argparse.Namespace) -> dict[str, Any]:
    """One arm over every (weights, data) pair: pooled mAP50, cross-fitted line-rule KPIs, frames/s."""
    from bench.kfold import cross_fitted
    from defectdet.evaluate import build_report, read_split
    from defectdet.evaluate_views import ViewDetector, collect_view_detections
    from defectdet.runtime.tta import native_grid, parse_tiles, passes

    tta, tiled = ARMS[arm]
    tiles = parse_tiles(opts.tiles) if tiled else None
    folds, fps, info = [], [], {}
    for i, (weights, data) in enumerate(pairs):
        names, images = read_split(data, "val")
        if opts.max_images:
            images = images[: opts.max_images]
        kw = {"imgsz": opts.imgsz, "conf": FLOOR, "device": opts.device, "threads": opts.threads}
        with ViewDetector(weights, len(names), tta, tiles, opts.tile_overlap, **kw) as det:
            t0 = time.perf_counter()
            folds.append(collect_view_detections(det, images, len(names)))
            wall = time.perf_counter() - t0
            if i == 0:
                frames = _frames(images, opts.timed)
                fps = frames_per_s(det, frames, opts.repeats)
                h, w = frames[0].shape[:2]
                grid = native_grid((h, w), det.imgsz, opts.tile_overlap) if tiles == "native" else tiles
                info = {"path": det.path, "imgsz": list(det.imgsz), "frame_hw": [h, w]}
                info["passes_per_frame"] = passes(tta, tiles, grid)
                info["grid"] = f"{grid[0]}x{grid[1]}" if grid else None
        print(f"tta: {arm} {weights.name} on {data}: {len(images)} images in {wall:.1f} s")
    pooled = [im for fold in folds for im in fold]
    rep = build_report(pooled, names)
    if len(folds) > 1:
        line = cross_fitted(folds, names, opts.target_escape, "any")
        good = cross_fitted(folds, names, None, "any", "part", 0.9, LINE_OVERKILL)
    else:
        line = cross_calibrated_kpis(pooled, names, opts.target_escape, rule="any")
        good = good_part_kpis(pooled, names, LINE_OVERKILL)
    return {
        "arm": arm,
        "tta": tta,
        "tiles": opts.tiles if tiled else None,
        **info,
        "map50": rep.map50,
        "map50_95": rep.map50_95,
        "line": {k: line[k] for k in KPI_KEYS},
        "good": {k: good[k] for k in KPI_KEYS},
        "fps": statistics.median(fps),
        "fps_passes": [round(v, 3) for v in fps],
        "n_images": len(pooled),
    }


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({n / d:.1%})" if d else "n/a"


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per (tag, arm), the off arm's frames/s the cost reference."""
    head = "| set | arm | views (passes/frame) | mAP50 | escape @cal. | overkill @cal. "
    head += "| escape / overkill, good parts @5% | frames/s (× off) "
    head += "| model |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for tag, res in results.items():
        off = next((a["fps"] for a in res["arms"] if a["arm"] == "off"), None)
        for a in res["arms"]:
            tiles = [f"tiles {a['tiles']} ({a['grid']})"] if a["tiles"] else []
            views = ", ".join([a["tta"]] + tiles)
            cost = f" ({a['fps'] / off:.2f}×)" if off else ""
            k, g = a["line"], a.get("good")
            good = (
                f"{_pct(g['escapes'], g['n_defective'])} / {_pct(g['overkills'], g['n_clean'])}"
                if g
                else "n/a"
            )
            lines.append(
                f"| {tag} | {a['arm']} | {views} ({a['passes_per_frame']}) | {a['map50']:.3f} | "
                f"{_pct(k['escapes'], k['n_defective'])} | {_pct(k['overkills'], k['n_clean'])} | {good} | "
                f"{a['fps']:.2f}{cost} | {res['model']} at {a['imgsz'][0]} px, {a['path']} |"
            )
    notes = [
        f"{tag}: {res['n_images']} held-out images ({res['splits']} split(s)), thresholds calibrated for "
        f"{res['target_escape']:.0%} escape (good parts: one part threshold for <= 5% overkill at 90% "
        f"confidence), line's rule; frames/s: median of {res['repeats']} passes over "
        f"{res['timed']} frames at load {res['load_1m']:.1f} on {res['cpus']} CPUs"
        for tag, res in results.items()
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _label(weights: Path) -> str:
    """``recipe/seed0 last.pt`` for a run's checkpoint, the file name otherwise."""
    if weights.suffix == ".pt" and weights.parent.name == "weights":
        return f"{'/'.join(weights.parts[-4:-2])} {weights.name}"
    return weights.name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/tta.py", description=__doc__.split("\n")[0])
    p.add_argument("--weights", nargs="+", required=True, help="run folders, .pt, .onnx or .engine files")
    p.add_argument("--data", nargs="+", required=True, help="data.yaml files, one per --weights (val split)")
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help=f"of {', '.join(ARMS)}")
    p.add_argument("--tiles", default="native", help="the tiles arms' tiles: native (default) or ROWSxCOLS")
    p.add_argument("--tile-overlap", type=float, default=0.2, help="tile overlap (fraction of a tile)")
    p.add_argument("--imgsz", type=int, help="input size of a .pt (default: as defectdet val --tta/--tiles)")
    p.add_argument("--target-escape", type=float, default=LINE_ESCAPE, help="calibration target (1%%)")
    p.add_argument("--timed", type=int, default=20, help="frames per timed pass (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    p.add_argument("--threads", type=int, help="CPU threads (ONNX Runtime; torch for a .pt)")
    p.add_argument("--device", default="cpu", help="a .pt's device (cpu, 0, ...)")
    p.add_argument("--max-images", type=int, help="score the first N images of each split (smoke runs)")
    p.add_argument("--tag", help="this set's row label (default: from the first --data)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "tta.json"), help="results JSON")
    p.add_argument("--page", help="also write the table into this docs page (docs/tta.md)")
    p.add_argument("--marker", default="tta-table", help="the marker in --page (default: tta-table)")
    return p


def _check(opts: argparse.Namespace) -> list[tuple[Path, str]]:
    from defectdet.evaluate_views import check_views

    if len(opts.weights) != len(opts.data):
        raise ConfigError(
            f"--weights: {len(opts.weights)} given for {len(opts.data)} --data files; expected one per split"
        )
    bad = [a for a in opts.arms if a not in ARMS]
    if bad:
        raise ConfigError(f"--arms {bad[0]}: expected one of {', '.join(ARMS)}")
    check_views("none", opts.tiles, opts.tile_overlap)
    if opts.tiles in (None, "off", "none", "1x1"):
        raise ConfigError(f"--tiles {opts.tiles}: expected native or ROWSxCOLS (the tiles arms' grid)")
    if opts.timed < 1 or opts.repeats < 1:
        raise ConfigError(f"--timed {opts.timed} --repeats {opts.repeats}: expected integers >= 1")
    if not 0 <= opts.target_escape < 1:
        raise ConfigError(f"--target-escape {opts.target_escape}: expected a rate in [0, 1)")
    for d in opts.data:
        if not Path(d).is_file():
            raise ConfigError(f"--data {d}: not found; expected a data.yaml")
    return [(resolve_weights(w), d) for w, d in zip(opts.weights, opts.data)]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # beside another CPU job (bench/quality.py)
    opts = _parser().parse_args(argv)
    pairs = _check(opts)
    if opts.threads and pairs[0][0].suffix == ".pt":
        import torch

        torch.set_num_threads(opts.threads)
    arms = [run_arm(arm, pairs, opts) for arm in opts.arms]
    tag = opts.tag or data_tag(opts.data[0])
    out = Path(opts.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[tag] = {
        "weights": [str(w) for w, _ in pairs],
        "data": [d for _, d in pairs],
        "model": _label(pairs[0][0]),
        "splits": len(pairs),
        "n_images": arms[0]["n_images"],
        "target_escape": opts.target_escape,
        "timed": opts.timed,
        "repeats": opts.repeats,
        "threads": opts.threads,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "arms": arms,
    }
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")
    text = table(results)
    print(text)
    print(f"written: {out}")
    if opts.page:
        print(f"written: {update_page(Path(opts.page), opts.marker, text)} ({opts.marker})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DefectdetError as e:
        print(f"bench/tta.py: error: {e}", file=sys.stderr)
        sys.exit(2)
