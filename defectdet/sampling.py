"""Defect-aware sampling of training images (numpy only; the ultralytics wiring is in
:mod:`defectdet.ultralytics_adapter`).

On a line most parts are good: a uniform draw shows the trainer each defective part once per epoch
among ten or more good ones. Two ways to draw them more often, both with the epoch length
unchanged (budgets stay comparable: an epoch is still ``len(dataset)`` images):

    defect   a target share of defective images per epoch (``defect_fraction``, default 0.5; the
             natural share is kept where it is already higher). Among defective images, an image
             weighs as much as its rarest class's repeat factor ``sqrt(f_max / f_c)`` (``f_c``: the
             share of defective images that contain class ``c``), so rare classes come up more.
    repeat   LVIS repeat-factor sampling: ``r_i = max_c max(1, sqrt(t / f_c))`` over the classes in
             image ``i`` (``f_c`` over all images, ``t`` = ``repeat_thresh``); a defect-free image has
             ``r_i = 1``. Weights are proportional to ``r_i``.
    uniform  every image equally (ultralytics' own shuffle).

The draw is with replacement, deterministic per (seed, epoch), and identical on every rank of a
multi-GPU run, each rank taking its own slice.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .errors import ConfigError

SAMPLING_MODES = ("uniform", "defect", "repeat")
DEFAULT_DEFECT_FRACTION = 0.5
DEFAULT_REPEAT_THRESH = 0.1


def check_sampling(mode, defect_fraction=None, repeat_thresh=None) -> None:
    """ConfigError naming the key for a bad sampling mode or parameter."""
    if mode not in SAMPLING_MODES:
        raise ConfigError(f"sampling={mode!r}: expected one of {', '.join(SAMPLING_MODES)} (or auto)")
    from .settings.train import TRAIN  # the ranges `defectdet train` declares

    if defect_fraction is not None:
        TRAIN["defect_fraction"].check(defect_fraction)
    TRAIN["repeat_thresh"].check(repeat_thresh)  # null: 0.1


def _class_presence(classes: Sequence[np.ndarray], nc: int) -> np.ndarray:
    """(N, nc) bool: image i contains class c."""
    pres = np.zeros((len(classes), nc), dtype=bool)
    for i, c in enumerate(classes):
        c = np.asarray(c, dtype=int).reshape(-1)
        pres[i, c[(c >= 0) & (c < nc)]] = True
    return pres


def _repeat_factors(pres: np.ndarray, thresh: float) -> np.ndarray:
    """(N,) r_i = max over the image's classes of max(1, sqrt(thresh / f_c)); 1 for no class."""
    f = pres.mean(0) if len(pres) else np.zeros(pres.shape[1])  # (nc,)
    r_c = np.where(f > 0, np.maximum(1.0, np.sqrt(thresh / np.maximum(f, 1e-12))), 1.0)  # (nc,)
    return np.where(pres.any(1), (pres * r_c).max(1), 1.0)


def image_weights(
    classes: Sequence[np.ndarray],
    nc: int,
    mode: str,
    defect_fraction: Optional[float] = None,
    repeat_thresh: Optional[float] = None,
) -> np.ndarray:
    """(N,) sampling probabilities (sum 1) of the training images whose box classes are ``classes``."""
    check_sampling(mode, defect_fraction, repeat_thresh)
    n = len(classes)
    if n == 0:
        return np.zeros(0)
    pres = _class_presence(classes, nc)  # (N, nc)
    if mode == "uniform":
        return np.full(n, 1.0 / n)
    if mode == "repeat":
        r = _repeat_factors(pres, DEFAULT_REPEAT_THRESH if repeat_thresh is None else repeat_thresh)
        return r / r.sum()
    defective = pres.any(1)  # (N,)
    if defective.all() or not defective.any():  # nothing to rebalance between
        return np.full(n, 1.0 / n)
    share = max(DEFAULT_DEFECT_FRACTION if defect_fraction is None else defect_fraction, defective.mean())
    sub = pres[defective]
    r = _repeat_factors(sub, float(sub.mean(0).max()))  # (D,) 1 for the commonest class
    w = np.zeros(n)
    w[defective] = share * r / r.sum()
    w[~defective] = (1 - share) / (~defective).sum()
    return w


class WeightedEpochSampler:
    """A sampler for torch's DataLoader (any iterable with ``__len__``): each pass draws
    ``len(weights)`` indices with replacement from ``weights``, seeded by (seed, epoch), and yields
    this rank's slice ``rank::world_size``. The epoch advances after each pass unless
    :meth:`set_epoch` sets it (ultralytics calls it under multi-GPU training)."""

    def __init__(self, weights: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or not len(w) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                "weights must be a non-empty 1-D array of finite non-negative numbers with a positive sum"
            )
        self.p = w / w.sum()
        self.seed, self.rank, self.world_size = int(seed), int(rank), max(int(world_size), 1)
        self.per_rank = math.ceil(len(w) / self.world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, epoch: int) -> np.ndarray:
        """All ranks' draw for ``epoch``: (per_rank * world_size,) image indices."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.choice(len(self.p), size=self.per_rank * self.world_size, replace=True, p=self.p)

    def __iter__(self):
        idx = self.indices(self.epoch)[self.rank :: self.world_size]
        self.epoch += 1
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.per_rank
