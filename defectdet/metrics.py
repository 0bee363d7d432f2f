"""Detection metrics and part-level KPIs in plain numpy (no torch, no ultralytics).

Two levels:

* **Boxes** (what mAP measures): detections are matched to ground truth per image, greedily in
  descending confidence, class-aware, at IoU 0.50:0.95 (the COCO / ultralytics rule); AP is the
  101-point interpolated area under the precision envelope, computed exactly as ultralytics'
  ``compute_ap`` (trapezoid over the 101 recall points) so ``defectdet val`` agrees with the
  numbers in training logs — including their convention that a perfect detector scores 0.995.
* **Parts** (what a factory buys): one image is one inspected part. A defective part *escapes* when
  no detection at the operating thresholds is correct (right class, IoU >= 0.5 with one of its
  defects); a clean part is an *overkill* when any detection passes the operating thresholds.
  Note the escape rule is stricter than the reject decision: a defective part flagged only by a
  wrong-class box is rejected on the line but counts as an escape here (the model did not see it).
  ``rule="any"`` counts as the line decides instead: a defective part is caught by any detection
  at the operating thresholds (its line escape rate is at most the box rule's).

:func:`calibrate_thresholds` picks per-class confidence thresholds that meet an escape target at
the lowest overkill it can find; its docstring describes the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import BadValue

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # (T,) COCO IoU thresholds; column 0 is IoU 0.5
RECALL_GRID = np.linspace(0.0, 1.0, 101)  # (101,) COCO recall points
ESCAPE_RULES = (
    "box",
    "any",
)  # what catches a defective part: a correct box, or any detection (the line's reject)


def check_escape_rule(rule: str, what: str) -> str:
    """``rule`` if it is one of :data:`ESCAPE_RULES`, else a one-line :class:`BadValue`
    ``<what>: expected one of ...`` (``what`` names the setting as the caller's user wrote it, e.g.
    ``--escape-rule strict``)."""
    if rule not in ESCAPE_RULES:
        raise BadValue(f"{what}: expected one of {', '.join(ESCAPE_RULES)}")
    return rule


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2.0 renamed trapz


@dataclass
class ImageDetections:
    """One image's detections and ground truth, boxes xyxy in the same (pixel) frame."""

    boxes: np.ndarray  # (N, 4) xyxy detections
    conf: np.ndarray  # (N,) confidences in [0, 1]
    cls: np.ndarray  # (N,) int class ids
    gt_boxes: np.ndarray  # (M, 4) xyxy ground truth
    gt_cls: np.ndarray  # (M,) int class ids
    name: str = ""  # image path or id, for reports

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)  # (N, 4)
        self.conf = np.asarray(self.conf, dtype=np.float64).reshape(-1)  # (N,)
        self.cls = np.asarray(self.cls, dtype=np.int64).reshape(-1)  # (N,)
        self.gt_boxes = np.asarray(self.gt_boxes, dtype=np.float64).reshape(-1, 4)  # (M, 4)
        self.gt_cls = np.asarray(self.gt_cls, dtype=np.int64).reshape(-1)  # (M,)
        if not (len(self.boxes) == len(self.conf) == len(self.cls)):
            raise ValueError(f"{self.name or 'image'}: boxes/conf/cls lengths differ")
        if len(self.gt_boxes) != len(self.gt_cls):
            raise ValueError(f"{self.name or 'image'}: gt_boxes/gt_cls lengths differ")

    @property
    def defective(self) -> bool:
        """A part is defective when it has at least one labelled defect."""
        return len(self.gt_cls) > 0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)  # (N, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)  # (M, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = np.clip(rb - lt, 0, None).prod(-1)  # (N, M)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)  # (N,)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)  # (N, M)


def match_detections(img: ImageDetections, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """Which detections are true positives at each IoU threshold: (N, T) bool, in ``img``'s order.

    Greedy, as COCO and ultralytics: detections in descending confidence each claim the unclaimed
    same-class ground truth with the highest IoU, if that IoU reaches the threshold.
    """
    thr = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)  # (T,)
    correct = np.zeros((len(img.conf), len(thr)), dtype=bool)  # (N, T)
    if not len(img.conf) or not len(img.gt_cls):
        return correct
    iou = box_iou(img.gt_boxes, img.boxes) * (img.gt_cls[:, None] == img.cls[None, :])  # (M, N)
    claimed = np.zeros((len(img.gt_cls), len(thr)), dtype=bool)  # (M, T)
    for j in np.argsort(-img.conf, kind="stable"):
        available = np.where(claimed, 0.0, iou[:, j, None])  # (M, T) IoU with unclaimed targets
        k = available.argmax(0)  # (T,) best unclaimed target per threshold
        correct[j] = available[k, np.arange(len(thr))] >= thr
        claimed[k, np.arange(len(thr))] |= correct[j]
    return correct


def correct_any(img: ImageDetections, iou_threshold: float = 0.5) -> np.ndarray:
    """(N,) bool: the detection overlaps a same-class defect with IoU >= ``iou_threshold``.

    Unlike :func:`match_detections` no one-to-one claim is made: for "did the part get caught" two
    boxes on one defect both count as having seen it.
    """
    if not len(img.conf) or not len(img.gt_cls):
        return np.zeros(len(img.conf), dtype=bool)
    iou = box_iou(img.gt_boxes, img.boxes) * (img.gt_cls[:, None] == img.cls[None, :])  # (M, N)
    return (iou >= iou_threshold).any(0)  # (N,)


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one PR curve (detections sorted by descending confidence), ultralytics' convention.

    Sentinels (0, 1) and (r_last, 0), (1, 0) are added, precision is replaced by its envelope
    (max precision at any higher recall), sampled at the 101 COCO recall points and integrated
    with the trapezoid rule. Returns (ap, envelope precision at RECALL_GRID (101,), recall points).
    """
    recall = np.asarray(recall, dtype=np.float64)  # (K,)
    precision = np.asarray(precision, dtype=np.float64)  # (K,)
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))  # (K+3,)
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))  # (K+3,)
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # (K+3,) envelope
    sampled = np.interp(RECALL_GRID, mrec, mpre)  # (101,)
    return float(_trapezoid(sampled, RECALL_GRID)), sampled, RECALL_GRID


def _class_curve(tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision of one class's detections, already sorted by confidence."""
    tpc = tp.cumsum(0).astype(np.float64)  # (K, T)
    fpc = (1 - tp).cumsum(0).astype(np.float64)  # (K, T)
    return tpc / (n_gt + 1e-16), tpc / (tpc + fpc)  # (K, T) each


@dataclass
class BoxStats:
    """Pooled detections of a dataset, the input of every box-level metric."""

    correct: np.ndarray  # (D, T) bool, matched at IOU_THRESHOLDS
    conf: np.ndarray  # (D,)
    cls: np.ndarray  # (D,) int
    n_gt: np.ndarray  # (nc,) int labelled instances per class

    @classmethod
    def from_images(cls, images: list[ImageDetections], nc: int) -> BoxStats:
        """Match every image and pool the results."""
        correct = [match_detections(im) for im in images]
        gt = np.concatenate([im.gt_cls for im in images]) if images else np.zeros(0, dtype=np.int64)
        return cls(
            correct=np.concatenate(correct) if correct else np.zeros((0, len(IOU_THRESHOLDS)), dtype=bool),
            conf=np.concatenate([im.conf for im in images]) if images else np.zeros(0),
            cls=np.concatenate([im.cls for im in images]) if images else np.zeros(0, dtype=np.int64),
            n_gt=np.bincount(gt, minlength=nc)[:nc],
        )

    def sorted_class(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Class ``c``'s (correct (K, T), conf (K,)) in descending confidence."""
        i = np.flatnonzero(self.cls == c)
        i = i[np.argsort(-self.conf[i], kind="stable")]
        return self.correct[i], self.conf[i]


def ap_per_class(stats: BoxStats) -> tuple[np.ndarray, np.ndarray]:
    """AP per class and IoU threshold, (nc, T), and the IoU-0.5 PR envelope (nc, 101) at RECALL_GRID.

    Classes without labels get AP 0 (and are left out of mAP by :func:`mean_ap`).
    """
    nc = len(stats.n_gt)
    ap = np.zeros((nc, stats.correct.shape[1]))  # (nc, T)
    pr = np.zeros((nc, len(RECALL_GRID)))  # (nc, 101)
    for c in range(nc):
        tp, _ = stats.sorted_class(c)
        if stats.n_gt[c] == 0 or not len(tp):
            continue
        recall, precision = _class_curve(tp, int(stats.n_gt[c]))  # (K, T) each
        for t in range(tp.shape[1]):
            ap[c, t], sampled, _ = compute_ap(recall[:, t], precision[:, t])
            if t == 0:
                pr[c] = sampled
    return ap, pr


def mean_ap(ap: np.ndarray, n_gt: np.ndarray) -> tuple[float, float]:
    """(mAP50, mAP50-95) over the classes that have labels; (0, 0) when none has."""
    has = np.asarray(n_gt) > 0
    if not has.any():
        return 0.0, 0.0
    return float(ap[has, 0].mean()), float(ap[has].mean())


def pr_at_thresholds(stats: BoxStats, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class box precision and recall (IoU 0.5) keeping detections with conf >= thresholds[c].

    Matching runs per class in confidence order, so the kept detections of a class are a prefix and
    their true positives are exactly the prefix's. Precision is 0 when nothing is kept.
    """
    nc = len(stats.n_gt)
    p, r = np.zeros(nc), np.zeros(nc)
    for c in range(nc):
        tp, conf = stats.sorted_class(c)
        keep = conf >= thresholds[c]  # (K,)
        n_tp = int(tp[keep, 0].sum()) if len(tp) else 0
        p[c] = n_tp / keep.sum() if keep.any() else 0.0
        r[c] = n_tp / stats.n_gt[c] if stats.n_gt[c] else 0.0
    return p, r


def max_f1_thresholds(stats: BoxStats, default: float = 0.25) -> np.ndarray:
    """Per-class confidence at the class's maximum box F1 (IoU 0.5), the highest one on ties.

    A class with no labels or no detections gets ``default`` (nothing to tune it on).
    """
    nc = len(stats.n_gt)
    out = np.full(nc, float(default))
    for c in range(nc):
        tp, conf = stats.sorted_class(c)
        if stats.n_gt[c] == 0 or not len(tp):
            continue
        recall, precision = _class_curve(tp[:, :1], int(stats.n_gt[c]))  # (K, 1) each
        f1 = (2 * precision * recall / (precision + recall + 1e-16))[:, 0]  # (K,)
        best = int(np.argmax(f1))  # first maximum = highest confidence
        out[c] = conf[best] if f1[best] > 0 else default
    return out


@dataclass
class PartScores:
    """Per-part, per-class best scores: everything the part KPIs and calibration depend on.

    A part is caught at thresholds ``t`` iff ``hit[i, c] >= t[c]`` for some c; a clean part is an
    overkill iff ``top[i, c] >= t[c]`` for some c. ``-inf`` means "no such detection".
    """

    hit: np.ndarray  # (P, nc) best confidence of a correct detection (IoU >= 0.5, right class)
    top: np.ndarray  # (P, nc) best confidence of any detection
    defective: np.ndarray  # (P,) bool: the part has at least one labelled defect
    names: list[str] = field(default_factory=list)  # (P,) image ids
    class_conf: list[np.ndarray] = field(default_factory=list)  # nc x (D_c,) every detection's conf

    @classmethod
    def from_images(cls, images: list[ImageDetections], nc: int, rule: str = "box") -> PartScores:
        """Reduce each image's detections to its per-class best (correct) confidence.

        ``rule``: "box" — a defective part is caught only by a correct detection (right class, IoU >= 0.5);
        "any" — by any detection, as the line's reject decision works (``hit`` is then ``top``)."""
        check_escape_rule(rule, f"escape rule {rule!r}")
        hit = np.full((len(images), nc), -np.inf)  # (P, nc)
        top = np.full((len(images), nc), -np.inf)  # (P, nc)
        for i, im in enumerate(images):
            np.maximum.at(top[i], im.cls, im.conf)
            if rule == "any":
                hit[i] = top[i]
                continue
            ok = correct_any(im)  # (N,)
            np.maximum.at(hit[i], im.cls[ok], im.conf[ok])
        defective = np.array([im.defective for im in images], dtype=bool)
        conf = np.concatenate([im.conf for im in images]) if images else np.zeros(0)  # (D,)
        pred = np.concatenate([im.cls for im in images]) if images else np.zeros(0, dtype=np.int64)  # (D,)
        by_class = [conf[pred == c] for c in range(nc)]
        return cls(
            hit=hit, top=top, defective=defective, names=[im.name for im in images], class_conf=by_class
        )


def part_kpis(scores: PartScores, thresholds: np.ndarray) -> dict[str, float | int]:
    """Escapes among defective parts and overkills among clean parts at per-class ``thresholds``."""
    t = np.asarray(thresholds, dtype=np.float64)[None, :]  # (1, nc)
    caught = (scores.hit >= t).any(1)  # (P,)
    flagged = (scores.top >= t).any(1)  # (P,)
    n_def, n_clean = int(scores.defective.sum()), int((~scores.defective).sum())
    escapes = int((scores.defective & ~caught).sum())
    overkills = int((~scores.defective & flagged).sum())
    return {
        "escape_rate": escapes / n_def if n_def else 0.0,
        "overkill_rate": overkills / n_clean if n_clean else 0.0,
        "escapes": escapes,
        "overkills": overkills,
        "n_defective": n_def,
        "n_clean": n_clean,
    }


@dataclass
class Calibration:
    """Result of :func:`calibrate_thresholds`."""

    thresholds: np.ndarray  # (nc,) per-class operating confidence
    reachable: bool  # the target is met on the calibration set
    allowed_escapes: int  # floor(target * n_defective); 0 when calibrated on good parts
    kpis: dict  # part_kpis at the final thresholds
    allowed_overkills: int | None = None  # good parts the threshold may flag (calibrated on good parts)


def _caught(scores: PartScores, t: np.ndarray) -> np.ndarray:
    return (scores.hit >= t[None, :]).any(1)  # (P,)


def _flagged(scores: PartScores, t: np.ndarray) -> np.ndarray:
    return (scores.top >= t[None, :]).any(1)  # (P,)


def _best_lowering(scores: PartScores, t: np.ndarray, active: np.ndarray) -> tuple[int, float] | None:
    """The cheapest threshold cut that catches escaped parts: (class, new threshold), or None.

    Cost = clean parts newly flagged, gain = escaped parts newly caught; the move with the lowest
    cost per caught part wins (ties: more parts caught, then the higher threshold).
    """
    escaped = scores.defective & ~_caught(scores, t)  # (P,)
    free = ~scores.defective & ~_flagged(scores, t)  # (P,) clean parts not yet flagged
    best, best_key = None, None
    for c in np.flatnonzero(active):
        esc_hits = scores.hit[escaped, c]  # (E,)
        levels = np.unique(esc_hits[np.isfinite(esc_hits) & (esc_hits < t[c])])  # (L,) ascending
        if not levels.size:
            continue
        gain = (esc_hits[None, :] >= levels[:, None]).sum(1)  # (L,)
        cost = (scores.top[free, c][None, :] >= levels[:, None]).sum(1)  # (L,)
        for level, g, k in zip(levels, gain, cost):
            key = (k / g, -g, -level)
            if best_key is None or key < best_key:
                best, best_key = (int(c), float(level)), key
    return best


def _best_raise(
    scores: PartScores, t: np.ndarray, active: np.ndarray, allowed: int, ceiling: np.ndarray
) -> tuple[int, float] | None:
    """The raise that removes the most overkill per escape it adds, staying within ``allowed``."""
    clean = ~scores.defective
    escapes0 = int((scores.defective & ~_caught(scores, t)).sum())
    overkills0 = int((clean & _flagged(scores, t)).sum())
    best, best_key = None, None
    for c in np.flatnonzero(active):
        others = t.copy()
        others[c] = np.inf  # class c switched off: what the other classes catch / flag alone
        caught_o, flagged_o = _caught(scores, others), _flagged(scores, others)  # (P,) each
        vals = scores.top[clean, c]
        levels = np.nextafter(np.unique(vals[np.isfinite(vals) & (vals >= t[c])]), np.inf)  # (L,) just above
        levels = levels[levels <= ceiling[c]]
        if not levels.size:
            continue
        caught = caught_o[None, :] | (scores.hit[:, c][None, :] >= levels[:, None])  # (L, P)
        flagged = flagged_o[None, :] | (scores.top[:, c][None, :] >= levels[:, None])  # (L, P)
        escapes = (scores.defective[None, :] & ~caught).sum(1)  # (L,)
        removed = overkills0 - (clean[None, :] & flagged).sum(1)  # (L,)
        for level, e, r in zip(levels, escapes, removed):
            if e > allowed or r <= 0:
                continue
            key = ((e - escapes0) / r, -r, level)
            if best_key is None or key < best_key:
                best, best_key = (int(c), float(level)), key
    return best


def _snap_to_midpoints(scores: PartScores, t: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Move each threshold to the middle of the score gap it sits in (same decisions, more margin).

    Any threshold in (highest score below it, lowest score at or above it] makes the same part
    (and box) decisions on this set; the midpoint tolerates small score shifts (FP32 vs INT8, ORT vs
    TensorRT). The scores are the part maxima plus every detection's (``class_conf``) when known.
    """
    t = t.copy()
    for c in np.flatnonzero(active):
        extra = scores.class_conf[c] if len(scores.class_conf) > c else np.zeros(0)
        vals = np.concatenate([scores.hit[:, c], scores.top[:, c], extra])
        vals = vals[np.isfinite(vals)]
        lo, hi = vals[vals < t[c]], vals[vals >= t[c]]
        if lo.size and hi.size:
            t[c] = (lo.max() + hi.min()) / 2
    return t


def calibrate_thresholds(
    scores: PartScores, start: np.ndarray, target_escape: float, active: np.ndarray | None = None
) -> Calibration:
    """Per-class confidence thresholds meeting an escape-rate target at the lowest overkill found.

    The exact problem (choose one threshold per class so that at most ``floor(target *
    n_defective)`` defective parts escape, minimising flagged clean parts) is a set-cover variant;
    this greedy heuristic solves it in polynomial time (exact for a single class, below the
    ceiling of step 3):

    1. Start from ``start`` (normally each class's max-F1 threshold).
    2. Lower: while too many parts escape, among all classes and all cut levels that catch at least
       one escaped part (the level is that part's best correct-detection score of the class), apply
       the cut with the fewest newly flagged clean parts per newly caught part.
       If no cut is left (the remaining escaped parts have no correct detection at any
       confidence), the target is unreachable: keep the lowest escape count, and go on with it as
       the budget.
    3. Raise: while some class can be raised — just past a clean part's score — removing overkill
       without exceeding the escape budget, apply the raise that removes most overkill per escape
       it adds. A class is never raised above its best correct-detection score (or its start),
       so a small validation set cannot switch a class off.
    4. Snap every threshold to the middle of its score gap (same decisions, more margin).

    ``active`` (nc,) bool marks the classes that may move (default all; pass ``n_gt > 0`` to keep
    classes without validation labels at their start).
    """
    if not 0.0 <= target_escape < 1.0:
        raise ValueError(f"target_escape must be in [0, 1), got {target_escape}")
    t = np.asarray(start, dtype=np.float64).copy()  # (nc,)
    active = np.ones(len(t), dtype=bool) if active is None else np.asarray(active, dtype=bool)
    allowed = int(np.floor(target_escape * int(scores.defective.sum()) + 1e-9))
    while int((scores.defective & ~_caught(scores, t)).sum()) > allowed:
        move = _best_lowering(scores, t, active)
        if move is None:
            break
        t[move[0]] = move[1]
    escapes = int((scores.defective & ~_caught(scores, t)).sum())
    reachable = escapes <= allowed
    budget = max(allowed, escapes)
    ceiling = np.maximum(np.asarray(start, dtype=np.float64), scores.hit.max(0, initial=-np.inf))  # (nc,)
    while (move := _best_raise(scores, t, active, budget, ceiling)) is not None:
        t[move[0]] = move[1]
    t = _snap_to_midpoints(scores, t, active)
    return Calibration(thresholds=t, reachable=reachable, allowed_escapes=allowed, kpis=part_kpis(scores, t))
