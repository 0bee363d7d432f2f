"""``defectdet data stats``: what the data looks like to the detector, and the focal preset it calls for.

Anchor-level imbalance (the quantity focal loss is about): a YOLO head scores every grid location
at strides 8/16/32, ``sum((imgsz / s)^2)`` candidate locations per training image (8400 at 640).
The task-aligned assigner makes up to ``topk=10`` of them positive per box, and only locations
whose centre lies inside the box are candidates, so a box of ``bw x bh`` px (at imgsz) has about
``min(10, sum_s bw*bh / s^2)`` positives. Mosaic keeps the object scale and density of one image
at imgsz, so per-image numbers carry over to training samples. Every image counts, defect-free
ones included: ``positive fraction = (1 - defect_free) * positive fraction in defect images``.

The rule (printed with the numbers) maps negatives-per-positive to a preset in configs/train/:
below 500:1 the data is balanced (dense labels: by this formula COCO's ~7.3 mostly large boxes per
image give ~115:1, and YOLO trains COCO well on plain BCE) and focal loss can hurt there ->
``balanced`` (gamma=0); then mild to 2000:1, and each further decade focuses harder. The first edge
follows bench/quality.py on DeepPCB: BCE beat the focal presets on its balanced split and on its rare
split as the defect sampler shows it, and focal_mild beat BCE only on the rare split drawn as it is;
the runs and their mAP50 are in docs/quality.md ("Quality benchmark").

The sampler and focal loss answer the same imbalance. Once the defect sampler draws defective images
(``sampling=defect``: the stats then carry a ``sampler`` entry), the recommendation is ``balanced``
(BCE) whatever the anchor ratio: with the sampler on, BCE led the focal presets on every set measured
(docs/quality.md). The bands apply when images are drawn as they are (``sampling=uniform``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .formats import label_path, read_labels
from .images import image_size
from .validate import CheckReport, check_dataset

SHOWN_ERRORS = 10  # `data check` errors printed by `data stats` (all of them go into stats.json)
TOPK = 10  # ultralytics TaskAlignedAssigner topk (v8DetectionLoss)
# (upper bound of negatives per positive anchor, preset, gamma, alpha, configs/train/<file>.yaml);
# the last band is open-ended.
BANDS = (
    (500.0, "balanced", 0.0, 0.5, "focal_balanced"),  # the edge: see the module docstring
    (2000.0, "mild", 1.0, 0.5, "focal_mild"),
    (20000.0, "standard", 2.0, 0.25, "focal"),
    (math.inf, "extreme", 4.0, 0.1, "focal_extreme"),
)
RULE = (
    "imbalance = negative/positive anchors on the train split at imgsz "
    "(positives ~ min(topk=10, anchor centres inside each box), defect-free images included); "
    "< 500:1 -> balanced (gamma=0, focal loss can hurt balanced data), 500-2000:1 -> mild (gamma=1, "
    "alpha=0.5), 2000-20000:1 -> standard (gamma=2, alpha=0.25), >= 20000:1 -> extreme (gamma=4, alpha=0.1)"
)


def _quantiles(values: list[float], digits: int = 6, qs=(0.1, 0.5, 0.9)) -> list[float | None]:
    return [round(float(v), digits) for v in np.quantile(values, qs)] if values else [None] * len(qs)


def _read_split(images: list[Path], imgsz: int) -> tuple[list[int], np.ndarray]:
    """Boxes per image and, per box, ``(class, w, h, w_px, h_px)`` (normalized; px at imgsz after the
    letterbox) as an (N, 5) array. The images passed ``defectdet data check``: every row is valid."""
    counts, boxes = [], []
    for image in images:
        rows, _ = read_labels(label_path(image))
        counts.append(len(rows))
        if rows:
            w, h = image_size(image)
            r = imgsz / max(w, h)  # letterbox scale
            boxes += [(c, bw, bh, bw * w * r, bh * h * r) for c, _, _, bw, bh in rows]
    return counts, np.array(boxes, dtype=float).reshape(-1, 5)


def _split_stats(
    images: list[Path], excluded: int, names: list[str], imgsz: int, strides: tuple[int, ...]
) -> dict[str, Any]:
    """Counts, box sizes and the anchor-level estimate for one split's images."""
    locations = sum(math.ceil(imgsz / s) ** 2 for s in strides)
    boxes_per_image, b = _read_split(images, imgsz)
    cls, pw, ph = b[:, 0].astype(int), b[:, 3], b[:, 4]  # (N,) each
    inside = pw * ph * sum(1 / s**2 for s in strides)  # (N,) expected anchor centres inside each box
    positives = float(np.minimum(TOPK, inside).sum())
    per_class = np.bincount(cls, minlength=len(names)).tolist()  # ids checked by data check
    area_frac, min_side_px = (b[:, 1] * b[:, 2]).tolist(), np.minimum(pw, ph).tolist()
    unassignable = int((inside < 1).sum())
    n, n_def = len(images), sum(1 for b in boxes_per_image if b)
    pos_frac = positives / (n * locations) if n else 0.0
    return {
        "images": n,
        "defect_images": n_def,
        "defect_free_images": n - n_def,
        "defect_free_fraction": round((n - n_def) / n, 6) if n else None,
        "instances": int(sum(boxes_per_image)),
        "instances_per_class": dict(zip(names, per_class)),
        "excluded_images": excluded,  # images with errors in `defectdet data check`: left out
        "boxes_per_image": {
            "mean": round(float(np.mean(boxes_per_image)), 3) if n else None,
            "mean_defect_images": round(sum(boxes_per_image) / n_def, 3) if n_def else None,
            "max": max(boxes_per_image, default=0),
        },
        "box_area_frac_p10_p50_p90": _quantiles(area_frac),
        "box_min_side_px_p10_p50_p90": _quantiles(min_side_px, digits=2),
        "boxes_below_min_stride": int(sum(s < min(strides) for s in min_side_px)),
        "anchors": {
            "locations_per_image": locations,
            "positives_per_image": round(positives / n, 3) if n else 0.0,
            "positive_fraction": round(pos_frac, 8),
            "positive_fraction_in_defect_images": round(positives / (n_def * locations), 8) if n_def else 0.0,
            "negatives_per_positive": round((1 - pos_frac) / pos_frac, 1) if pos_frac else None,
            "boxes_with_no_anchor_inside": int(unassignable),
        },
        "_min_side_px": min_side_px,  # for the figure; dropped from the json
        "_boxes_per_image": boxes_per_image,
    }


def dataset_stats(
    data_yaml: str | os.PathLike, imgsz: int = 640, strides: tuple[int, ...] = (8, 16, 32)
) -> dict:
    """Statistics of every split of a data.yaml (or COCO json / VOC folder, converted first), plus the
    recommended focal preset (from the train split).

    Runs ``defectdet data check`` first and goes by its verdicts: a dataset-level error (names,
    a missing or empty split, a symlink loop...) is refused with one DataError line; images with
    errors are left out (counted in ``excluded_images``, as ``strict=False`` training skips them).
    Returns a json-ready dict (see ``format_stats``).
    """
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 1:
        raise DataError(f"imgsz={imgsz!r}: expected a positive whole number of pixels (the training size)")
    if not strides or not all(isinstance(s, int) and s >= 1 for s in strides):
        raise DataError(f"strides={strides!r}: expected positive whole numbers like 8,16,32")
    rep = check_dataset(data_yaml)
    _refuse_fatal(data_yaml, rep)
    names = rep.names
    splits = {}
    for split, images in rep.paths.items():
        kept = [p for p in images if p not in rep.bad_files]
        splits[split] = _split_stats(kept, len(images) - len(kept), names, imgsz, tuple(strides))
    stats = {
        "data": str(rep.data_yaml),
        "imgsz": imgsz,
        "strides": list(strides),
        "names": names,
        "check": rep.summary(),
        "check_errors": [str(p) for p in rep.errors],
        "splits": splits,
    }
    stats["recommendation"] = recommend_preset(stats)
    return stats


def _refuse_fatal(data: str | os.PathLike, rep: CheckReport) -> None:
    """One DataError line for what the checker calls dataset-level (skipping images cannot fix it)."""
    if rep.fatal:
        more = f" (and {len(rep.fatal) - 1} more dataset-level errors)" if len(rep.fatal) > 1 else ""
        raise DataError(
            f"{rep.fatal[0]}{more}; no statistics for a dataset that 'defectdet data check {data}' refuses"
        )


def recommend_preset(stats: dict) -> dict[str, Any]:
    """The focal preset for the measured imbalance: ``dict(cls_loss, gamma, alpha, preset, config, rule)``
    (``config`` names the matching ``configs/train/<config>.yaml``).

    ``stats`` is :func:`dataset_stats`' result (its train split is used) or one split's dict.
    ``rule`` is the printed, one-line justification with the measured numbers.
    """
    split = stats["splits"].get("train", next(iter(stats["splits"].values()))) if "splits" in stats else stats
    a = split["anchors"]
    ratio = a["negatives_per_positive"]
    ratio = math.inf if ratio is None else ratio  # no positive at all: as imbalanced as it gets
    _, preset, gamma, alpha, config = next((b for b in BANDS if ratio < b[0]), BANDS[-1])
    sampler = stats.get("sampler") if "splits" in stats else None
    if sampler:  # the sampler already answers the imbalance: see the module docstring
        _, preset, gamma, alpha, config = BANDS[0]
        return {
            "cls_loss": "focal",
            "gamma": gamma,
            "alpha": alpha,
            "preset": preset,
            "config": config,
            "negatives_per_positive": None if math.isinf(ratio) else ratio,
            "rule": (
                f"sampling={sampler['sampling']} draws {sampler['defect_share']:.0%} defective images "
                f"(sampled imbalance {ratio:,.0f}:1) -> {preset} (gamma={gamma:g}, alpha={alpha:g}). "
                f"Rule: with the defect sampler on, BCE-equivalent; otherwise {RULE}"
            ),
        }
    f0 = split["defect_free_fraction"] or 0.0
    measured = (
        f"measured {ratio:,.0f}:1 = 1 / ((1 - defect-free {f0:.3f}) x positive fraction in defect images "
        f"{a['positive_fraction_in_defect_images']:.2e}) -> {preset} (gamma={gamma:g}, alpha={alpha:g})"
    )
    if math.isinf(ratio):
        measured = (
            f"no labelled box in the train split (no positive anchor) -> {preset} "
            f"(gamma={gamma:g}, alpha={alpha:g})"
        )
    return {
        "cls_loss": "focal",
        "gamma": gamma,
        "alpha": alpha,
        "preset": preset,
        "config": config,
        "negatives_per_positive": None if math.isinf(ratio) else ratio,
        "rule": f"{measured}. Rule: {RULE}",
    }


def format_stats(stats: dict) -> str:
    """The human-readable report ``defectdet data stats`` prints."""
    lines = [f"dataset {stats['data']}  (imgsz {stats['imgsz']}, strides {stats['strides']})"]
    errors = stats["check_errors"]
    lines += [f"warning: {e}" for e in errors[:SHOWN_ERRORS]]
    if len(errors) > SHOWN_ERRORS:
        lines.append(f"warning: ... and {len(errors) - SHOWN_ERRORS} more (run 'defectdet data check')")
    if errors:
        lines.append(f"warning: data check {stats['check']}; images with errors are left out below")
    for split, s in stats["splits"].items():
        a, bpi = s["anchors"], s["boxes_per_image"]
        p10, p50, p90 = s["box_area_frac_p10_p50_p90"]
        m10, m50, m90 = s["box_min_side_px_p10_p50_p90"]
        lines += [
            f"[{split}] {s['images']} images, {s['defect_free_images']} defect-free "
            f"({(s['defect_free_fraction'] or 0):.1%}), {s['instances']} boxes "
            f"(mean {bpi['mean']}/image, {bpi['mean_defect_images']}/defect image, max {bpi['max']})",
            "  instances per class: " + ", ".join(f"{k} {v}" for k, v in s["instances_per_class"].items()),
            f"  box area / image p10/p50/p90: {p10} / {p50} / {p90};  min side at imgsz p10/p50/p90: "
            f"{m10} / {m50} / {m90} px; {s['boxes_below_min_stride']} boxes below the smallest stride",
            f"  anchors: {a['locations_per_image']} locations/image, {a['positives_per_image']} "
            f"positives/image -> positive fraction {a['positive_fraction']:.2e}, "
            f"{a['negatives_per_positive']}:1 negatives per positive; {a['boxes_with_no_anchor_inside']} "
            "boxes with no anchor centre inside",
        ]
        if s["excluded_images"]:
            lines.append(f"  {s['excluded_images']} images with errors left out (run 'defectdet data check')")
    rec = stats["recommendation"]
    lines.append(
        f"recommended: cls_loss={rec['cls_loss']} preset={rec['preset']} gamma={rec['gamma']:g} "
        f"alpha={rec['alpha']:g}"
    )
    lines.append(f"  why: {rec['rule']}")
    return "\n".join(lines)


def public(stats: dict) -> dict:
    """``stats`` without the private per-box arrays (what goes into stats.json)."""
    return {
        **stats,
        "splits": {
            k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in stats["splits"].items()
        },
    }


def plot_stats(stats: dict, out_png: str | os.PathLike) -> Path:
    """PNG: instances per class, box min-side histogram (px at imgsz, strides marked), boxes per
    image, defect-free fraction per split. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits, names = stats["splits"], stats["names"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    width = 0.8 / max(len(splits), 1)
    for i, (split, s) in enumerate(splits.items()):
        ax[0, 0].bar(
            np.arange(len(names)) + i * width, list(s["instances_per_class"].values()), width, label=split
        )
        if s["_min_side_px"]:
            bins = np.geomspace(max(min(s["_min_side_px"]), 0.5), max(s["_min_side_px"]) + 1, 30)
            ax[0, 1].hist(s["_min_side_px"], bins=bins, alpha=0.5, label=split)
        ax[1, 0].hist(
            s["_boxes_per_image"],
            bins=np.arange(max(s["_boxes_per_image"], default=0) + 2) - 0.5,
            alpha=0.5,
            label=split,
        )
    ax[0, 0].set(title="instances per class", xticks=np.arange(len(names)) + 0.4 - width / 2)
    ax[0, 0].set_xticklabels(names, rotation=30, ha="right")
    for s in stats["strides"]:
        ax[0, 1].axvline(s, color="k", ls="--", lw=0.8)
    ax[0, 1].set(xscale="log", title=f"box min side at imgsz {stats['imgsz']} (px; dashed: strides)")
    ax[1, 0].set(title="boxes per image (0 = defect-free)", yscale="log")
    fr = [s["defect_free_fraction"] or 0.0 for s in splits.values()]
    ax[1, 1].bar(list(splits), fr, color="tab:green")
    ax[1, 1].set(title="defect-free fraction", ylim=(0, 1))
    for x, v in enumerate(fr):
        ax[1, 1].text(x, v + 0.02, f"{v:.1%}", ha="center")
    for a in (ax[0, 0], ax[0, 1], ax[1, 0]):
        a.legend()
    rec = stats["recommendation"]
    fig.suptitle(
        f"{Path(stats['data']).name}: recommended {rec['preset']} (gamma={rec['gamma']:g}, "
        f"alpha={rec['alpha']:g})"
    )
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
