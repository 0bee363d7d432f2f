"""The report of ``bench/quality.py``: the markdown table (median ± half-range over seeds, paired
ΔmAP50 to BCE), the baseline warning, PR-curve and bar-chart PNGs, all from the cached
``<out>/<data>/<arm>/seed<k>/result.json`` files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from defectdet.config import atomic_write_bytes, atomic_write_text
from defectdet.errors import ConfigError

LOSS_ARMS = ("bce", "focal", "qfl", "vfl")  # + the recommended preset
ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = ("model", "imgsz", "batch", "epochs")  # what makes cached results comparable
FP_PER_IMAGE = 0.1  # false positives of the rarest class per image, for its recall
MIN_BASELINE_MAP50 = 0.3  # below this the BCE baseline has not learnt: deltas are noise
COLUMNS = (  # (result key, header, format spec)
    ("map50", "mAP50", ".3f"),
    ("map50_95", "mAP50-95", ".3f"),
    ("rare_recall", "R_rare@{fp}FP/img", ".3f"),
    ("escape", "escape@cal", ".1%"),
    ("overkill", "overkill@cal", ".1%"),
    ("escape_line", "escape@cal1%", ".1%"),
    ("overkill_line", "overkill@cal1%", ".1%"),
    ("escape_line_any", "escape@cal1% any-det", ".1%"),
    ("overkill_line_any", "overkill@cal1% any-det", ".1%"),
    ("escape_line_good", "escape@ovk5% good parts", ".1%"),
    ("overkill_line_good", "overkill@ovk5% good parts", ".1%"),
    ("d_map50", "ΔmAP50 vs bce", "+.3f"),
    ("images_per_s", "train img/s", ".1f"),
    ("load_1m", "load 1m", ".1f"),
)


# ----------------------------------------------------------------------------- table
def _shown(value):
    """A budget value as the report prints it: a model path inside this repository relative to it
    (the table is committed; the absolute path names one machine)."""
    if isinstance(value, str) and Path(value).is_absolute():
        try:
            return Path(value).relative_to(ROOT).as_posix()
        except ValueError:
            return value
    return value


def _spread(values: list[float]) -> tuple[float, float]:
    """(median, half the min-max range)."""
    return statistics.median(values), (max(values) - min(values)) / 2


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (data, arm) in first-seen order: per-metric values over seeds (None = n/a) and the
    paired per-seed mAP50 difference to the same data's bce arm."""
    bce = {(r["data_tag"], r["seed"]): r["map50"] for r in results if r["arm"] == "bce"}
    rows: dict[tuple[str, str], dict] = {}
    for r in results:
        row = rows.setdefault(
            (r["data_tag"], r["arm"]),
            {
                "data_tag": r["data_tag"],
                "arm": r["arm"],
                "loss": r["loss"],
                "recommended": r.get("recommended", False),
                "seeds": [],
                "rarest": r["rarest_class"],
                **{k: [] for k, _, _ in COLUMNS},
            },
        )
        row["seeds"].append(r["seed"])
        for key, _, _ in COLUMNS:
            v = r.get(key)
            if key == "d_map50":
                base = bce.get((r["data_tag"], r["seed"]))
                v = None if base is None or r["arm"] == "bce" else r["map50"] - base
            if v is not None:
                row[key].append(float(v))
    return list(rows.values())


def _cell(values: list[float], spec: str) -> str:
    """``median ± half-range`` (just the value for one seed; n/a for none)."""
    if not values:
        return "n/a"
    med, half = _spread(values)
    return format(med, spec) + (f" ± {format(half, spec.lstrip('+'))}" if len(values) > 1 else "")


def markdown_table(rows: list[dict], fp_per_image: float = FP_PER_IMAGE) -> str:
    """The docs' table (docs/quality.md): one line per (data, arm), median ± half-range over seeds."""
    heads = [h.format(fp=fp_per_image) for _, h, _ in COLUMNS]
    out = ["| data | arm | loss | seeds | " + " | ".join(heads) + " |", "|" + "---|" * (4 + len(heads))]
    for r in rows:
        arm = r["arm"] + (" (recommended)" if r["recommended"] else "")
        cells = [_cell(r[k], p) for k, _, p in COLUMNS]
        out.append(
            f"| {r['data_tag']} | {arm} | {r['loss']} | {len(r['seeds'])} | " + " | ".join(cells) + " |"
        )
    return "\n".join(out)


def baseline_warnings(rows: list[dict]) -> list[str]:
    """One line per dataset whose BCE baseline median mAP50 is below MIN_BASELINE_MAP50 (or missing)."""
    out = []
    for tag in dict.fromkeys(r["data_tag"] for r in rows):
        base = next((r for r in rows if r["data_tag"] == tag and r["arm"] == "bce" and r["map50"]), None)
        if base is None:
            out.append(f"WARNING: {tag}: no bce baseline result: the deltas have no reference")
        elif (m := statistics.median(base["map50"])) < MIN_BASELINE_MAP50:
            out.append(
                f"WARNING: {tag}: the BCE baseline's mAP50 is {m:.3f} < {MIN_BASELINE_MAP50}: "
                "comparison is noise at this budget (train longer, or on a GPU: --budget gpu --device 0)"
            )
    return out


# ----------------------------------------------------------------------------- plots
def _png(draw, path: Path, size=(6.4, 4.8)) -> Path:
    """Render ``draw(fig)`` headless and write the PNG atomically."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    draw(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_pr(results: list[dict], path: Path) -> Path:
    """One panel per dataset: each arm's class-mean PR envelope (solid) and its rarest class (dashed),
    averaged over seeds."""
    tags = list(dict.fromkeys(r["data_tag"] for r in results))

    def draw(fig):
        for ax, tag in zip(np.atleast_1d(fig.subplots(1, len(tags), squeeze=False)[0]), tags):
            for i, arm in enumerate(dict.fromkeys(r["arm"] for r in results if r["data_tag"] == tag)):
                rs = [r for r in results if r["data_tag"] == tag and r["arm"] == arm]
                rec = rs[0]["pr"]["recall"]
                mean, rare = (np.mean([r["pr"][k] for r in rs], 0) for k in ("mean", "rarest"))  # (101,) each
                ax.plot(
                    rec, mean, color=f"C{i}", label=f"{arm} mAP50 {np.median([r['map50'] for r in rs]):.3f}"
                )
                ax.plot(rec, rare, color=f"C{i}", ls="--", lw=0.8)
            ax.set(
                xlabel="recall",
                ylabel="precision",
                xlim=(0, 1),
                ylim=(0, 1.02),
                title=f"{tag}: all classes (solid), {rs[0]['rarest_class']} (dashed)",
            )
            ax.legend(fontsize=7, loc="lower left")

    return _png(draw, path, size=(6.0 * len(tags), 4.8))


def plot_bars(rows: list[dict], path: Path, fp_per_image: float = FP_PER_IMAGE) -> Path:
    """One panel per table metric; bars = arms grouped by dataset, error bars = min..max over seeds."""
    tags = list(dict.fromkeys(r["data_tag"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    metrics = [c for c in COLUMNS if c[0] != "d_map50"]

    def draw(fig):
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        width = 0.8 / max(len(arms), 1)
        for ax, (key, head, _) in zip(axes, metrics):
            for i, arm in enumerate(arms):
                for j, tag in enumerate(tags):
                    r = next((r for r in rows if r["data_tag"] == tag and r["arm"] == arm), None)
                    if r is None or not r[key]:
                        continue
                    med, v = statistics.median(r[key]), r[key]
                    ax.bar(
                        j + (i - (len(arms) - 1) / 2) * width,
                        med,
                        width,
                        color=f"C{i}",
                        yerr=[[med - min(v)], [max(v) - med]],
                        capsize=2,
                    )
            ax.set_xticks(range(len(tags)), tags, rotation=20, fontsize=7)
            ax.set_title(head.format(fp=fp_per_image), fontsize=9)
        from matplotlib.patches import Patch  # one entry per arm, whichever datasets it ran on

        fig.legend(
            handles=[Patch(color=f"C{i}", label=arm) for i, arm in enumerate(arms)],
            loc="lower center",
            ncol=len(arms),
            fontsize=8,
            bbox_to_anchor=(0.5, 1.0),
        )

    return _png(draw, path, size=(3.2 * len(metrics), 4.0))


def report(out: Path) -> str:
    """Table, warnings and plots from every cached ``result.json`` under ``out``."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/seed*/result.json"))]
    if not results:
        raise ConfigError(f"{out}: no cached results (*/*/seed*/result.json); run the benchmark first")
    evals = {json.dumps(r["eval"], sort_keys=True) for r in results}
    if len(evals) > 1:
        print(f"quality: WARNING: results evaluated with different settings: {sorted(evals)}")
    fp_per_image, target = results[0]["eval"]["fp_per_image"], results[0]["eval"]["target_escape"]
    tags = {t: i for i, t in enumerate(dict.fromkeys(r["data_tag"] for r in results))}
    arm_rank = lambda a: LOSS_ARMS.index(a) if a in LOSS_ARMS else len(LOSS_ARMS)  # noqa: E731
    results.sort(key=lambda r: (tags[r["data_tag"]], arm_rank(r["arm"]), r["arm"], r["seed"]))
    rows = aggregate(results)
    budgets = {json.dumps({k: _shown(r["budget"][k]) for k in FINGERPRINT}, sort_keys=True) for r in results}
    text = "\n".join(
        [
            markdown_table(rows, fp_per_image),
            "",
            f"budget: {'; '.join(sorted(budgets))}. Rarest class: "
            + ", ".join(f"{t} {next(r['rarest'] for r in rows if r['data_tag'] == t)}" for t in tags)
            + f". escape/overkill at thresholds calibrated for {target:.0%} (and 1%, a line's target) escape "
            "on one half of val, counted on the other half, both ways round; a defective part counts as "
            "caught by a correct box (right class, IoU >= 0.5), or, in the any-det columns, by any "
            "detection (the line's reject rule).",
            *baseline_warnings(rows),
        ]
    )
    atomic_write_text(out / "quality.md", text + "\n")
    atomic_write_text(out / "quality.json", json.dumps({"rows": rows, "results": results}, indent=1) + "\n")
    plot_pr(results, out / "quality_pr.png")
    plot_bars(rows, out / "quality_bars.png", fp_per_image)
    return text


def update_page(page: Path, marker: str, text: str) -> Path:
    """Replace what lies between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->`` in the docs
    ``page`` with ``text`` (the docs' measured tables are the scripts' output, never typed)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    doc = page.read_text()
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        raise ConfigError(f"{page}: expected one '{start}' line followed by one '{end}' line")
    head, rest = doc.split(start)
    _, tail = rest.split(end)
    return atomic_write_text(page, f"{head}{start}\n{text.strip()}\n{end}{tail}")
