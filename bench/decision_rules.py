"""Which decision rule holds the line's targets on parts it was not fitted on? Each rule, each model.

    python bench/decision_rules.py runs/demo_spread/seed*-threads*          # runs of bench/demo_spread.py
    python bench/decision_rules.py [NAME=]MODEL:DATA.yaml ...               # any model (.onnx, .pt), data set
    python bench/decision_rules.py RUN ... --out runs/decision_rules --page docs/quality.md
    python bench/decision_rules.py --report-only --out bench/results/decision_rules --page docs/quality.md

Every model's val detections are collected once (``<out>/<name>/dets.json.gz``, reused on a rerun) and
scored under the line's rule (any detection above its threshold rejects the part) with each way of
setting the thresholds (:data:`RULES`), cross-fitted: the val parts are dealt into two halves (part
``i`` to half ``i % 2``), each half is counted at thresholds calibrated on the other, and the counts are
summed. So every part is counted once, at thresholds not fitted on it. The rules:

* ``per-class @1%``: per-class thresholds calibrated for 1 % escape on the defective parts
  (``defectdet val --target-escape 0.01 --escape-rule any``, ``package --target-escape 0.01``);
* ``part @1%, 90%``: one threshold on the part score for 1 % escape with 90 % bootstrap confidence
  (``--threshold-rule part --confidence 0.9``);
* ``good parts @5%, 90%``: one part threshold set from the good parts for at most 5 % overkill with
  90 % confidence (``--threshold-rule part --target-overkill 0.05 --confidence 0.9``, what ``package``
  does by default).

Beside them, not a rule: the best one part threshold for 1 % escape picked *in hindsight* on all the
parts it counts (:func:`hindsight`), the ceiling of every one-threshold rule on that model.

A demo run is ``<run>/train/weights/model.onnx`` with ``<run>/data/data.yaml``; ``[NAME=]MODEL:DATA``
names any other pair (a ``.pt`` is run at its run's native ``eval_imgsz`` when ``defectdet.yaml`` beside
it has one, as ``defectdet val`` does). One JSON line per model in ``<out>/decision_rules.jsonl``, kept
across runs (a model of the same name is replaced); the table gives each model's escapes and overkills
per rule, how many models met the line's target (escape <= 1 %, overkill <= 5 %) and the medians, per
data set (a demo run's own synthetic set is ``demo``).
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
from defectdet.config import atomic_write_text  # noqa: E402
from defectdet.errors import ConfigError, DefectdetError  # noqa: E402

MARKER = "decision-rules"
LINE_ESCAPE, LINE_OVERKILL = 0.01, 0.05  # the line's targets
HINDSIGHT = "hindsight"  # the row key of :func:`hindsight`
RULES = (  # (key, words, cross_fitted's arguments after (folds, names))
    ("per_class", "per-class @1%", (LINE_ESCAPE, "any", "per-class", None, None)),
    ("part90", "part @1%, 90%", (LINE_ESCAPE, "any", "part", 0.9, None)),
    ("good90", "good parts @5%, 90%", (None, "any", "part", 0.9, LINE_OVERKILL)),
)


def resolve(item: str) -> tuple[str, Path, Path]:
    """(name, model, data.yaml) of a demo run folder or a ``[NAME=]MODEL:DATA`` pair; a missing file is
    one line."""
    p = Path(item)
    if p.is_dir():
        model, data = p / "train" / "weights" / "model.onnx", p / "data" / "data.yaml"
        name = p.name
    elif ":" in item:
        given, eq, pair = item.partition("=")
        if not eq:
            given, pair = "", item
        m, _, d = pair.rpartition(":")
        model, data = Path(m), Path(d)
        name = given or f"{model.parent.parent.name or model.stem}-{model.stem}"
    else:
        raise ConfigError(f"{item}: expected a demo run folder or MODEL:DATA (e.g. best.onnx:data.yaml)")
    for f, what in ((model, "model"), (data, "data.yaml")):
        if not f.is_file():
            raise ConfigError(f"{item}: {f} not found; expected the {what} of the run")
    return name, model, data


def hindsight(images: list, nc: int) -> dict[str, Any]:
    """Not a rule, the ceiling of every one-threshold rule: the one part threshold that meets 1 % escape
    with the fewest overkills, picked on all the parts it counts (fitted and counted on the same parts)."""
    from bench.kfold import operating_curve

    allowed = int(np.floor(LINE_ESCAPE * sum(im.defective for im in images) + 1e-9))
    c = operating_curve(images, nc, max_escapes=allowed)
    keys = ("escapes_for", "n_defective", "overkills_at", "n_clean", "reachable")
    return dict(
        zip(("escapes", "n_defective", "overkills", "n_clean", "reachable"), (c.get(k) for k in keys))
    )


def score(images: list, names: list[str]) -> dict[str, Any]:
    """Every rule's cross-fitted escapes and overkills over two halves of ``images``, and the
    :func:`hindsight` ceiling."""
    from bench.kfold import cross_fitted
    from defectdet.evaluate import build_report

    halves = [images[f::2] for f in range(2)]
    out: dict[str, Any] = {"map50": build_report(images, names).map50}
    for key, _, args in RULES:
        r = cross_fitted(halves, names, *args)
        out[key] = {k: r[k] for k in ("escapes", "n_defective", "overkills", "n_clean", "reachable")}
    out[HINDSIGHT] = hindsight(images, len(names))
    return out


def run_one(item: str, out: Path) -> dict[str, Any]:
    """One model: its detections (cached) and every rule's counts."""
    from bench.kfold import load_detections, save_detections
    from defectdet.artifact import RunInfo
    from defectdet.evaluate import collect_detections, read_split

    name, model, data = resolve(item)
    names, images = read_split(data, "val")
    cache = out / name / "dets.json.gz"
    if not cache.is_file():
        info = RunInfo.find(model) if model.suffix == ".pt" else None
        imgsz = info.deploy_imgsz if info is not None else None  # a native-crop run validates at its size
        save_detections(cache, collect_detections(str(model), images, len(names), imgsz=imgsz)[0])
    kind = "demo" if Path(item).is_dir() else _set_name(data)
    row = {"name": name, "set": kind, "model": str(model), "data": str(data)}
    return {**row, **score(load_detections(cache), names)}


def _set_name(data: Path) -> str:
    """``<folder>/<yaml stem>`` of a data.yaml, e.g. ``deeppcb/data_rare``."""
    return f"{data.parent.name}/{data.stem}"


def data_set(row: dict[str, Any]) -> str:
    """The data set a row was scored on, for the per-set summary lines: ``demo`` for a demo run (its
    ``<run>/data/data.yaml``), else ``<folder>/<yaml stem>`` of the data, e.g. ``deeppcb/data_rare``."""
    if row.get("set"):
        return row["set"]
    data = Path(row.get("data", ""))
    if not data.name:
        return ""
    return "demo" if (data.name, data.parent.name) == ("data.yaml", "data") else _set_name(data)


def backfill(rows: list[dict[str, Any]], out: Path) -> bool:
    """Add the :func:`hindsight` ceiling to kept rows scored before it existed, from their cached
    detections (``<out>/<name>/dets.json.gz``); rows without a cache stay "not scored". True if any was."""
    from bench.kfold import load_detections

    added = False
    for row in rows:
        cache = out / row["name"] / "dets.json.gz"
        if HINDSIGHT in row or not cache.is_file():
            continue
        images = load_detections(cache)
        nc = 1 + max(
            (int(c) for im in images for c in (*im.cls, *im.gt_cls)), default=0
        )  # any-rule: sizes only
        row[HINDSIGHT], added = hindsight(images, nc), True
    return added


def met(r: dict[str, Any]) -> bool:
    """The line's target: escape <= 1 % and overkill <= 5 % of the counted parts."""
    return r["escapes"] <= LINE_ESCAPE * r["n_defective"] + 1e-9 and r["overkills"] <= (
        LINE_OVERKILL * r["n_clean"] + 1e-9
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per model, escapes and overkills per rule; then targets met and medians."""
    head = "| model | defective / good | mAP50 | " + " | ".join(w for _, w, _ in RULES)
    lines = [head + " | in hindsight: best one threshold @1% |", "|" + "---|" * (4 + len(RULES))]

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "not scored"
        if r["escapes"] is None:
            return "unreachable"
        mark = "" if r["reachable"] else " (unreachable)"
        return (
            f"{r['escapes']} ({r['escapes'] / r['n_defective']:.1%}) / {r['overkills']} "
            f"({r['overkills'] / r['n_clean']:.1%}){mark}"
        )

    for row in rows:
        first = row[RULES[0][0]]
        lines.append(
            f"| {row['name']} | {first['n_defective']} / {first['n_clean']} | {row['map50']:.3f} | "
            + " | ".join(cell(row[k]) for k, _, _ in RULES)
            + f" | {cell(row.get(HINDSIGHT))} |"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(data_set(row), []).append(row)
    for name, group in groups.items():  # one data set's models are not summed with another's
        of = f"{name}: " if len(groups) > 1 else ""
        lines.append(
            f"| **{of}met ≤ 1 % escape at ≤ 5 % overkill** | | | "
            + " | ".join(f"{sum(met(r[k]) for r in group)} of {len(group)}" for k, _, _ in RULES)
            + " | |"
        )
        med = []
        for k, _, _ in RULES:
            e = np.median([r[k]["escapes"] / r[k]["n_defective"] for r in group])
            o = np.median([r[k]["overkills"] / r[k]["n_clean"] for r in group])
            med.append(f"{e:.1%} / {o:.1%}")
        lines.append(f"| **{of}median escape / overkill** | | | " + " | ".join(med) + " | |")
    lines.append(
        "\neach cell: escapes (share of defective parts) / overkills (share of good parts), the val parts "
        "dealt into two halves, each counted at thresholds calibrated on the other; a part is rejected on "
        "any detection above its threshold. In hindsight: not a rule but the ceiling of any one part "
        "threshold, the one with the fewest overkills at <= 1 % escape picked on all the parts it counts."
    )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/decision_rules.py", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", help="demo run folders, or MODEL:DATA pairs")
    p.add_argument(
        "--out", default=str(ROOT / "runs" / "decision_rules"), help="detections and the JSON lines"
    )
    p.add_argument("--page", help="write the table into this docs page between the marker lines")
    p.add_argument("--marker", default=MARKER, help=f"the marker in --page (default: {MARKER})")
    p.add_argument("--report-only", action="store_true", help="the table from <out>/decision_rules.jsonl")
    return p


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    out = Path(opts.out)
    kept = out / "decision_rules.jsonl"
    earlier = (
        [json.loads(line) for line in kept.read_text().splitlines() if line.strip()] if kept.is_file() else []
    )
    if opts.report_only:
        if not kept.is_file():
            raise ConfigError(f"{kept}: not found; expected the JSON lines of an earlier run (--out)")
        rows = earlier
        if backfill(rows, out):
            atomic_write_text(kept, "".join(json.dumps(r) + "\n" for r in rows))
    else:
        if not opts.runs:
            raise ConfigError("expected demo run folders or MODEL:DATA pairs (or --report-only)")
        for item in opts.runs:  # every input checked before any model runs
            resolve(item)
        new = [run_one(item, out) for item in opts.runs]
        fresh = {r["name"] for r in new}
        rows = [r for r in earlier if r["name"] not in fresh] + new  # earlier models kept, same name replaced
        atomic_write_text(kept, "".join(json.dumps(r) + "\n" for r in rows))
    text = table(rows)
    atomic_write_text(out / "decision_rules.md", text)
    print(text)
    if opts.page:
        print(f"written: {update_page(Path(opts.page), opts.marker, text)} ({opts.marker})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DefectdetError as e:
        print(f"bench/decision_rules.py: error: {e}", file=sys.stderr)
        sys.exit(2)
