"""Focal-family classification losses as pure functions on logits.

Every function takes raw logits (never probabilities), computes in float32 internally (stable at
logits of +-100 in float16 / bfloat16 too) and returns the loss in the input's dtype.
Natural logarithms throughout.

    sigmoid_focal_loss   FL(p_t)  = -a_t (1 - p_t)^g log(p_t)                  (Lin et al., RetinaNet)
    quality_focal_loss   QFL(s,y) = -|y - s|^b [y log s + (1 - y) log(1 - s)]  (Li et al., GFL)
    varifocal_loss       VFL(s,q) = -q [q log s + (1 - q) log(1 - s)]  if q > 0
                                    -a s^g log(1 - s)                   if q = 0  (Zhang et al., VarifocalNet)
    softmax_focal_loss   FL over C mutually exclusive classes, per-class a, ignore_index

where s = sigmoid(logit), y / q are soft targets in [0, 1], p_t = s y + (1 - s)(1 - y) and
a_t = a y + (1 - a)(1 - y) (a for positives, 1 - a for negatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

REDUCTIONS = ("none", "mean", "sum")
_EPS = 1e-12  # floor for the modulating base, so u**g has finite gradients for 0 < g < 1


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"Invalid reduction {reduction!r}; expected one of {', '.join(map(repr, REDUCTIONS))}"
        )


def _check_exponent(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"Invalid {name}={value!r}; expected a number >= 0 (0 turns focusing off)")


def _check_alpha(alpha: Optional[float], allow_none: bool = True) -> None:
    if alpha is None and allow_none:
        return
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        options = "a number in [0, 1] or None (no alpha weighting)" if allow_none else "a number in [0, 1]"
        raise ValueError(f"Invalid alpha={alpha!r}; expected {options}")


def _check_same_shape(logits: torch.Tensor, targets: torch.Tensor, name: str = "targets") -> None:
    if logits.shape != targets.shape:
        raise ValueError(
            f"Shape mismatch: logits {tuple(logits.shape)} vs {name} {tuple(targets.shape)}; expected the "
            "same shape"
        )


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _modulate(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """base**exponent with base floored at _EPS (exponent 0 gives exactly 1)."""
    if exponent == 0:
        return torch.ones_like(base)
    return base.clamp_min(_EPS).pow(exponent)


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: Optional[float] = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Binary focal loss FL = -a_t (1 - p_t)^g log(p_t), one independent sigmoid per element.

    Args:
        logits: raw scores, any shape.
        targets: same shape, 0/1 labels or soft targets in [0, 1] (p_t and a_t interpolate linearly,
            as torchvision does; for IoU-aligned soft targets prefer :func:`quality_focal_loss`).
        alpha: weight for positives (1 - alpha for negatives); ``None`` disables the weighting.
        gamma: focusing exponent; 0 gives (alpha-weighted) binary cross-entropy.
        reduction: 'none' | 'mean' | 'sum'.
    """
    _check_reduction(reduction)
    _check_exponent("gamma", gamma)
    _check_alpha(alpha)
    _check_same_shape(logits, targets)
    x, t = logits.float(), targets.float()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")  # -log(p_t), stable
    # 1 - p_t = s(1 - t) + (1 - s)t, with 1 - s = sigmoid(-x) computed directly (no cancellation)
    one_minus_pt = torch.sigmoid(x) * (1 - t) + torch.sigmoid(-x) * t
    loss = _modulate(one_minus_pt, gamma) * ce
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss, reduction).to(logits.dtype)


def quality_focal_loss(
    logits: torch.Tensor,
    soft_targets: torch.Tensor,
    beta: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Quality focal loss QFL = |y - s|^b * BCE(s, y) for soft targets y in [0, 1].

    The target is the localisation quality (IoU) of the assigned box, 0 for background; the
    modulating factor shrinks the loss of well-estimated scores, generalising focal loss to
    continuous targets (beta=0 gives BCE on soft targets).
    """
    _check_reduction(reduction)
    _check_exponent("beta", beta)
    _check_same_shape(logits, soft_targets, "soft_targets")
    x, y = logits.float(), soft_targets.float()
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    loss = _modulate((y - torch.sigmoid(x)).abs(), beta) * ce
    return _reduce(loss, reduction).to(logits.dtype)


def varifocal_loss(
    logits: torch.Tensor,
    soft_targets: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Varifocal loss: positives (q > 0) weighted by q, negatives down-weighted by a s^g.

    Asymmetric: only negatives are focused, so the rare positives keep their full gradient,
    and a high-quality positive (large q) counts more than a low-quality one.
    """
    _check_reduction(reduction)
    _check_exponent("gamma", gamma)
    _check_alpha(alpha, allow_none=False)
    _check_same_shape(logits, soft_targets, "soft_targets")
    x, q = logits.float(), soft_targets.float()
    pos = (q > 0).float()
    weight = q * pos + alpha * _modulate(torch.sigmoid(x), gamma) * (1 - pos)
    loss = weight * F.binary_cross_entropy_with_logits(x, q, reduction="none")
    return _reduce(loss, reduction).to(logits.dtype)


def softmax_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: Union[None, float, Sequence[float], torch.Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss over mutually exclusive classes: -a[t] (1 - p_t)^g log p_t.

    Args:
        logits: (N, C) or (N, C, d1, ...) raw scores.
        targets: (N,) or (N, d1, ...) class indices; ``ignore_index`` entries are excluded from
            the loss and from the mean's denominator.
        gamma: focusing exponent; 0 gives (weighted) cross-entropy.
        alpha: None, one number for every class, or a per-class sequence/tensor of length C, each in [0, 1].
        reduction: 'none' (per element, 0 where ignored) | 'mean' (over non-ignored) | 'sum'.
    """
    _check_reduction(reduction)
    _check_exponent("gamma", gamma)
    if logits.dim() < 2 or targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"Shape mismatch: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}; "
            "expected logits (N, C, ...) and targets (N, ...)"
        )
    n_cls = logits.shape[1]
    valid = targets != ignore_index  # (N, ...)
    safe_t = torch.where(valid, targets, torch.zeros_like(targets)).long()
    logp = F.log_softmax(logits.float(), dim=1)  # (N, C, ...)
    logp_t = logp.gather(1, safe_t.unsqueeze(1)).squeeze(1)  # (N, ...)
    loss = -_modulate(-torch.expm1(logp_t), gamma) * logp_t  # 1 - p_t = -expm1(log p_t)
    if alpha is not None:
        a = _class_alpha(alpha, n_cls, logits.device)
        loss = a[safe_t] * loss
    loss = loss * valid
    if reduction == "mean":
        return (loss.sum() / valid.sum().clamp_min(1)).to(logits.dtype)
    return _reduce(loss, reduction).to(logits.dtype)


def _class_alpha(alpha, n_cls: int, device) -> torch.Tensor:
    if isinstance(alpha, (int, float)):
        _check_alpha(float(alpha), allow_none=False)
        return torch.full((n_cls,), float(alpha), device=device)
    a = torch.as_tensor(alpha, dtype=torch.float32, device=device).flatten()
    if a.numel() != n_cls:
        raise ValueError(
            f"Invalid alpha: {a.numel()} values for {n_cls} classes; expected one per class or a number"
        )
    if bool(((a < 0) | (a > 1)).any()):
        raise ValueError(f"Invalid alpha={a.tolist()}; expected every value in [0, 1]")
    return a


# --------------------------------------------------------------------------- the registry
def _bce(logits: torch.Tensor, targets: torch.Tensor, gamma=None, alpha=None) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


@dataclass(frozen=True)
class ClsLossSpec:
    """One classification loss as training uses it: ``fn(logits, soft_targets, gamma, alpha)``
    element-wise, the gamma/alpha used when the user gives none, and the default ``cls`` gain.

    Gains: ultralytics' BCE gain is 0.5 beside box 7.5 (CIoU) and dfl 1.5. The focal forms are far
    smaller per anchor (easy negatives nearly vanish: on the synthetic set at init, cls loss 10.9 for
    BCE vs 7e-4 for focal at gain 1), so matching BCE's magnitude is meaningless; instead the cls:box
    weight ratio of each loss's reference detector is carried over to ultralytics' box gain:
    RetinaNet focal 1:1 and GFL QFL 1:2 -> ~4, PP-YOLOE VFL 1:2.5 -> 3."""

    fn: Callable[..., torch.Tensor]
    gamma: Optional[float]
    alpha: Optional[float]
    gain: float
    needs_alpha: bool = False  # alpha=None is refused (vfl: the negatives' weight)


# name -> spec: the one place to add a classification loss (see CONTRIBUTING.md)
CLS_LOSS_SPECS: dict[str, ClsLossSpec] = {
    "bce": ClsLossSpec(_bce, None, None, 0.5),
    "focal": ClsLossSpec(
        lambda x, t, gamma, alpha: sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma), 2.0, 0.25, 4.0
    ),
    "qfl": ClsLossSpec(lambda x, t, gamma, alpha: quality_focal_loss(x, t, beta=gamma), 2.0, None, 4.0),
    "vfl": ClsLossSpec(
        lambda x, t, gamma, alpha: varifocal_loss(x, t, alpha=alpha, gamma=gamma),
        2.0,
        0.75,
        3.0,
        needs_alpha=True,
    ),
}
CLS_LOSSES = tuple(CLS_LOSS_SPECS)


def cls_loss_spec(name: str) -> ClsLossSpec:
    """The registered loss ``name``; ValueError listing the valid names otherwise."""
    if name not in CLS_LOSS_SPECS:
        raise ValueError(
            f"Invalid classification loss {name!r}; expected one of {', '.join(map(repr, CLS_LOSSES))}"
        )
    return CLS_LOSS_SPECS[name]
