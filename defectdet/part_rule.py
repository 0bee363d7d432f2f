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

The other way round, :func:`calibrate_overkill_threshold` sets the one threshold from the *good*
parts: the lowest threshold that flags at most ``target_overkill`` of good parts, at an optional
``confidence``, with escape the measured outcome. Good parts are many and need no labels; a handful of
labelled defective parts cannot pin a 1 % escape target (with 41 of them, 1 % allows no escape at all,
so the threshold sits at the single weakest defect's score).

The result is a per-class vector with the same value in every entry, so every consumer of per-class
thresholds (``thresholds.yaml``, the runtime's ``Detector``, the station's decisions) applies it unchanged.
numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import Calibration, PartScores, part_kpis

THRESHOLD_RULES = ("per-class", "part")  # per-class greedy calibration, or one threshold on the part score


@dataclass(frozen=True)
class OperatingTarget:
    """What a model's thresholds are calibrated for on val, under the line's rule (any detection rejects):
    an ``escape`` rate on the defective parts (per-class thresholds, ``defectdet val --target-escape``) or
    an ``overkill`` rate on the good parts (one part threshold, :func:`calibrate_overkill_threshold`), the
    latter at an optional ``confidence``. Exactly one of the two rates is set."""

    escape: float | None = None
    overkill: float | None = None
    confidence: float | None = None

    def __post_init__(self) -> None:
        if (self.escape is None) == (self.overkill is None):
            raise ValueError(f"expected exactly one of escape and overkill, got {self}")
        if self.confidence is not None and self.overkill is None:
            raise ValueError("confidence: expected with an overkill target")

    def evaluate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`defectdet.evaluate.evaluate` that calibrate for it."""
        if self.overkill is None:
            return {"target_escape": self.escape}
        return {"target_overkill": self.overkill, "threshold_rule": "part", "confidence": self.confidence}

    def describe(self) -> str:
        """``escape <= 0.01`` or ``overkill <= 0.05 of good parts (90% confidence)``."""
        if self.overkill is None:
            return f"escape <= {self.escape:g}"
        conf = f" ({self.confidence:.0%} confidence)" if self.confidence is not None else ""
        return f"overkill <= {self.overkill:g} of good parts{conf}"

    def as_dict(self) -> dict[str, Any]:
        """For a manifest or report: target_escape, target_overkill, confidence (None where unset)."""
        return {"target_escape": self.escape, "target_overkill": self.overkill, "confidence": self.confidence}


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


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n up to millions without overflow)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def allowed_overkills(n_good: int, target_overkill: float, confidence: float | None = None) -> int:
    """How many of ``n_good`` calibration good parts the threshold may flag, or -1 when none may.

    A threshold just above the (j+1)-th highest of n exchangeable good-part scores flags a new good part
    with probability p ~ Beta(j+1, n-j) (at most; ties aside). Without ``confidence``: the largest j with
    E[p] = (j+1)/(n+1) <= target (split conformal). With it: the largest j with
    P(p <= target) = P(Binomial(n, target) >= j+1) >= confidence."""
    if not 0.0 < target_overkill < 1.0:
        raise ValueError(f"target_overkill must be in (0, 1), got {target_overkill}")
    check_confidence(confidence)
    if confidence is None:
        return int(math.floor(target_overkill * (n_good + 1) + 1e-9)) - 1
    j = -1
    while j + 1 < n_good and binomial_tail(n_good, target_overkill, j + 2) >= confidence:
        j += 1
    return j


def calibrate_overkill_threshold(
    scores: PartScores, target_overkill: float, confidence: float | None = None
) -> Calibration:
    """One threshold for every class: the lowest that flags at most :func:`allowed_overkills` of the
    calibration's good parts (so overkill <= ``target_overkill``, at ``confidence`` when given); escape is
    what it is. ``reachable`` is False when even a threshold above every good part's score does not meet
    the bound (too few good parts for that target and confidence): the threshold then flags none of them."""
    top = part_scores(scores)[1]  # (P,)
    good = np.sort(top[~scores.defective])[::-1]  # (G,) descending, -inf: no detection
    nc = scores.hit.shape[1]
    j = allowed_overkills(len(good), target_overkill, confidence)
    reachable = j >= 0
    j = max(j, 0)
    finite = np.concatenate([scores.hit[np.isfinite(scores.hit)], top[np.isfinite(top)]])
    floor = float(finite.min()) if finite.size else 0.5  # no detection anywhere: nothing to set it from
    if j < len(good) and np.isfinite(good[j]):
        t = float(np.nextafter(good[j], np.inf))  # flags the j good parts above, not the (j+1)-th
    else:  # fewer good parts with any detection than allowed: every detection may reject
        t = floor
    th = np.full(nc, min(t, 1.0))
    return Calibration(
        thresholds=th, reachable=reachable, allowed_escapes=0, kpis=part_kpis(scores, th), allowed_overkills=j
    )
