"""When is an INT8 loss real? A paired bootstrap over the validation images for the accuracy gate.

The gate's limits are in points (mAP50 1.0, per-class recall or AP50 2.0, escape 1.0, overkill 2.0).
With 7-13 labels in a class, one label moves a class's AP50 by several points, so a fixed limit
refuses models whose "loss" is one box's luck. Here the same images are resampled with replacement
for both models (``n_boot`` times, a fixed seed) and every gated metric is recomputed on each
resample at the reports' own operating thresholds; the loss's ``level`` interval (5th to 95th
percentile at 0.9) says whether it is distinguishable from no loss. :func:`defectdet.export.gate.compare`
refuses a metric only when its point loss is over the limit *and* its interval lies above zero.

numpy only; the reports must carry their detections (``EvalReport.detections``, set by
:func:`defectdet.evaluate.evaluate`), in the same image order for both models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import metrics as M

DEFAULT_LEVEL = 0.9  # two-sided interval of the loss
DEFAULT_BOOT = 1000


class _Model:
    """One model's detections reduced per image: matches (IoU 0.5), confidences, classes, part scores."""

    def __init__(self, images: list[M.ImageDetections], nc: int, rule: str):
        self.correct = [M.match_detections(im)[:, 0] for im in images]  # n x (D_i,)
        self.conf = [im.conf for im in images]
        self.cls = [im.cls for im in images]
        self.gt = np.stack([np.bincount(im.gt_cls, minlength=nc)[:nc] for im in images])  # (n, nc)
        self.parts = M.PartScores.from_images(images, nc, rule)

    def metrics(self, idx: np.ndarray, thresholds: np.ndarray, names: list[str]) -> dict[str, float]:
        """mAP50, AP50[c], recall[c] (at ``thresholds``), escape_rate, overkill_rate on images ``idx``."""
        stats = M.BoxStats(
            correct=np.concatenate([self.correct[i] for i in idx])[:, None],  # (D, 1): IoU 0.5
            conf=np.concatenate([self.conf[i] for i in idx]),  # (D,)
            cls=np.concatenate([self.cls[i] for i in idx]),  # (D,)
            n_gt=self.gt[idx].sum(0),
        )  # (nc,)
        ap = M.ap_per_class(stats)[0][:, 0]  # (nc,) AP50
        recall = M.pr_at_thresholds(stats, thresholds)[1]  # (nc,)
        out: dict[str, float] = {}
        for c, name in enumerate(names):
            if stats.n_gt[c]:
                out[f"AP50[{name}]"], out[f"recall[{name}]"] = float(ap[c]), float(recall[c])
        out["mAP50"] = M.mean_ap(ap[:, None], stats.n_gt)[0]
        sub = M.PartScores(
            hit=self.parts.hit[idx], top=self.parts.top[idx], defective=self.parts.defective[idx]
        )
        kpi = M.part_kpis(sub, thresholds)
        out["escape_rate"] = kpi["escape_rate"] if kpi["n_defective"] else float("nan")
        out["overkill_rate"] = kpi["overkill_rate"] if kpi["n_clean"] else float("nan")
        return out


def _thresholds(report: Any, names: list[str]) -> np.ndarray:
    th = report.get("thresholds") if isinstance(report, dict) else getattr(report, "thresholds", None)
    return np.array([float((th or {}).get(n, 0.0)) for n in names])  # (nc,)


def paired_intervals(
    fp32: Any,
    int8: Any,
    names: list[str],
    rule: str = "box",
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """{metric: (low, high)} interval of the INT8 loss in points (positive = INT8 worse; for the rates,
    a rise) over paired bootstrap resamples of the images. Empty when either report lacks detections
    or the two were not made on the same images."""
    d32, d8 = (getattr(r, "detections", None) for r in (fp32, int8))
    if not d32 or not d8 or [im.name for im in d32] != [im.name for im in d8]:
        return {}
    nc, n = len(names), len(d32)
    a, b = _Model(d32, nc, rule), _Model(d8, nc, rule)
    t32, t8 = _thresholds(fp32, names), _thresholds(int8, names)
    rng = np.random.default_rng(seed)
    losses: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)  # (n,) the same images for both models
        m32, m8 = a.metrics(idx, t32, names), b.metrics(idx, t8, names)
        for k, v in m32.items():
            rise = k.endswith("_rate")
            losses.setdefault(k, []).append(100.0 * ((m8[k] - v) if rise else (v - m8.get(k, 0.0))))
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    out = {}
    for k, v in losses.items():
        arr = np.asarray(v)
        arr = arr[np.isfinite(arr)]
        if arr.size:
            lo, hi = np.percentile(arr, q)
            out[k] = (float(lo), float(hi))
    return out
