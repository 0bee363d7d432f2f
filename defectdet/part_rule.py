"""One part-level decision: a single threshold on a part's score, with an optional confidence margin.

The line rejects a part when any detection passes its class threshold. With a few labelled defective
parts per class, calibrating one threshold per class (:func:`defectdet.metrics.calibrate_thresholds`)
fits each class to a handful of parts. The alternative here is one number for all classes: a part's
score is its highest detection confidence (any class), and the threshold is the highest one that lets
at most ``floor(target_escape x defective parts)`` of the calibration parts escape.

``confidence`` builds the margin in: the calibration's defective parts are resampled with replacement
(``n_boot`` times, a fixed seed); each resample gives its own threshold, and the lower
``1 - confidence`` quantile of those is used, so escape <= target holds for that share of resampled
calibration sets, not only for the one at hand. The price is overkill, reported beside it.

The result is a per-class vector with the same value in every entry, so every consumer of per-class
thresholds (``thresholds.yaml``, the runtime's ``Detector``, the station's decisions) applies it unchanged.
numpy only.
"""

from __future__ import annotations

import numpy as np

from .metrics import Calibration, PartScores, part_kpis

THRESHOLD_RULES = ("per-class", "part")  # per-class greedy calibration, or one threshold on the part score


def check_confidence(confidence: float | None, what: str = "confidence") -> float | None:
    """``confidence`` when it is None or in [0.5, 1) (``defectdet val --confidence``'s range), else a one-line
    :class:`BadValue`."""
    from .settings.val import VAL

    return None if confidence is None else VAL["confidence"].range.check(what, confidence)


def part_scores(scores: PartScores) -> tuple[np.ndarray, np.ndarray]:
    """(P,) a part's score where it counts as caught (best ``hit`` of any class) and (P,) where it is
    flagged (best ``top``); under the line's rule ("any") the two are the same."""
    return scores.hit.max(1, initial=-np.inf), scores.top.max(1, initial=-np.inf)


def _threshold(defect_scores: np.ndarray, allowed: int) -> float:
    """The highest threshold at which at most ``allowed`` of ``defect_scores`` fall below it (-inf when
    more than ``allowed`` parts have no detection at all)."""
    return float(np.sort(defect_scores)[allowed]) if allowed < len(defect_scores) else np.inf


def calibrate_part_threshold(
    scores: PartScores,
    target_escape: float,
    confidence: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Calibration:
    """One threshold for every class meeting ``target_escape`` on the calibration parts (at
    ``confidence`` over bootstrap resamples of the defective parts when given); see the module doc."""
    if not 0.0 <= target_escape < 1.0:
        raise ValueError(f"target_escape must be in [0, 1), got {target_escape}")
    check_confidence(confidence)
    hit, top = part_scores(scores)  # (P,), (P,)
    d = hit[scores.defective]  # (D,)
    nc = scores.hit.shape[1]
    allowed = int(np.floor(target_escape * len(d) + 1e-9))
    if not len(d):
        t = float(top[~scores.defective].max(initial=-np.inf))
        t = np.nextafter(t, np.inf) if np.isfinite(t) else 0.5  # no defect to calibrate on: flag nothing seen
        th = np.full(nc, t)
        return Calibration(thresholds=th, reachable=True, allowed_escapes=0, kpis=part_kpis(scores, th))
    t = _threshold(d, allowed)
    if confidence is not None and np.isfinite(t):
        rng = np.random.default_rng(seed)
        boot = rng.choice(d, size=(n_boot, len(d)), replace=True)  # (B, D)
        tb = np.sort(boot, axis=1)[:, allowed]  # (B,) each resample's threshold
        t = min(t, float(np.quantile(tb, 1.0 - confidence, method="lower")))
    reachable = bool(np.isfinite(t))
    if not reachable:  # parts without any detection escape at any threshold: catch every part that has one
        t = float(d[np.isfinite(d)].min(initial=np.inf))
    below = np.concatenate([hit, top])
    below = below[np.isfinite(below) & (below < t)]
    if below.size and np.isfinite(t):
        t = (below.max() + t) / 2  # the middle of the gap: the same decisions here, more margin
    th = np.full(nc, min(t, 1.0))  # a threshold file holds confidences in [0, 1]
    return Calibration(
        thresholds=th, reachable=reachable, allowed_escapes=allowed, kpis=part_kpis(scores, th)
    )
