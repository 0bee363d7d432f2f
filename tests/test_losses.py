"""Focal-family losses tested against their formulas and identities (natural log), not stored outputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from defectdet.losses import quality_focal_loss, sigmoid_focal_loss, softmax_focal_loss, varifocal_loss


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# Worked numbers: alpha disabled, gamma = 2, positive target, p_t = p.
#   CE = -ln p_t:        0.9 -> 0.1054, 0.5 -> 0.6931, 0.1 -> 2.3026
#   FL = (1-p_t)^2 * CE: 0.9 -> 0.01 * 0.10536 = 0.00105; 0.5 -> 0.25 * 0.69315 = 0.1733;
#                        0.1 -> 0.81 * 2.30259 = 1.8651
@pytest.mark.parametrize(
    "p_t, ce, fl",
    [(0.9, 0.1054, 0.00105), (0.5, 0.6931, 0.1733), (0.1, 2.3026, 1.8651)],
)
def test_worked_numbers_positive_and_negative(p_t, ce, fl):
    x = torch.tensor([logit(p_t), -logit(p_t)])  # positive with p = p_t; negative with p = 1 - p_t
    t = torch.tensor([1.0, 0.0])
    got_fl = sigmoid_focal_loss(x, t, alpha=None, gamma=2.0)
    got_ce = sigmoid_focal_loss(x, t, alpha=None, gamma=0.0)
    assert got_ce.tolist() == pytest.approx([ce, ce], abs=5e-5)
    assert got_fl.tolist() == pytest.approx([fl, fl], abs=5e-5 if fl > 0.01 else 5e-6)


def test_alpha_applies_as_one_minus_alpha_to_negatives():
    x = torch.tensor([logit(0.5), logit(0.5)])
    t = torch.tensor([1.0, 0.0])
    out = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0)
    # both have p_t = 0.5: FL = a_t * 0.25 * ln 2, a_t = 0.25 (pos), 0.75 (neg)
    assert out.tolist() == pytest.approx([0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)], rel=1e-5)


def test_gamma_zero_equals_bce_values_and_gradients():
    torch.manual_seed(0)
    x1 = (torch.randn(64, 5) * 4).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    t = (torch.rand(64, 5) > 0.7).float()
    a = sigmoid_focal_loss(x1, t, alpha=None, gamma=0.0, reduction="sum")
    b = F.binary_cross_entropy_with_logits(x2, t, reduction="sum")
    a.backward()
    b.backward()
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 4.0])
def test_ratio_to_ce_is_alpha_t_times_modulating_factor(alpha, gamma):
    torch.manual_seed(1)
    x = torch.randn(200, dtype=torch.float64) * 3
    t = (torch.rand(200) > 0.5).double()
    p = torch.sigmoid(x)
    p_t = torch.where(t > 0, p, 1 - p)  # float64 reference: 1 - p_t keeps its digits near p_t = 1
    a_t = (
        torch.ones_like(t)
        if alpha is None
        else torch.where(t > 0, torch.tensor(alpha), torch.tensor(1 - alpha))
    )
    fl = sigmoid_focal_loss(x.float(), t.float(), alpha=alpha, gamma=gamma).double()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    # FL = a_t (1 - p_t)^g * CE, i.e. FL / CE = a_t (1 - p_t)^g; compared as a product because float32 CE of a
    # very confident negative (~1e-5) has only ~2 significant digits, which a ratio would amplify
    assert torch.allclose(fl, a_t * (1 - p_t) ** gamma * ce, rtol=1e-4, atol=1e-6)
    big = ce > 1e-2
    assert torch.allclose((fl / ce)[big], (a_t * (1 - p_t) ** gamma)[big], rtol=1e-4)


def test_matches_torchvision_where_available():
    tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision not importable")
    torch.manual_seed(2)
    x = torch.randn(32, 4) * 5
    t = (torch.rand(32, 4) > 0.8).float()
    for alpha, gamma in [(0.25, 2.0), (0.5, 1.0), (0.1, 4.0)]:
        ours = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="sum")
        ref = tv_ops.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="sum")
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    # torchvision disables alpha with a negative value; ours with None
    ref = tv_ops.sigmoid_focal_loss(x, t, alpha=-1, gamma=2.0, reduction="mean")
    assert sigmoid_focal_loss(x, t, alpha=None, reduction="mean").item() == pytest.approx(
        ref.item(), rel=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "fn",
    [
        lambda x, t: sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0),
        lambda x, t: sigmoid_focal_loss(x, t, alpha=None, gamma=0.5),
        lambda x, t: quality_focal_loss(x, t * 0.7),
        lambda x, t: varifocal_loss(x, t * 0.7),
    ],
)
def test_finite_values_and_gradients_at_extreme_logits(dtype, fn):
    x = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0] * 2, dtype=dtype, requires_grad=True)
    t = torch.tensor([0.0] * 5 + [1.0] * 5, dtype=dtype)
    loss = fn(x, t)
    assert loss.dtype == dtype
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    # a confident wrong answer costs ~|logit| (times the weights), a confident right one ~0
    assert loss[4].float().item() > 10 and loss[0].float().item() < 1e-6


def test_soft_targets_quality_focal():
    # QFL = |y - s|^beta * BCE(s, y); zero exactly when the score equals the soft target's... focus term
    y = torch.tensor([0.0, 0.3, 0.8, 1.0])
    x = torch.tensor([logit(0.2), logit(0.3), logit(0.5), logit(0.9)])
    s = torch.sigmoid(x)
    bce = -(y * torch.log(s) + (1 - y) * torch.log(1 - s))
    expected = (y - s).abs() ** 2 * bce
    got = quality_focal_loss(x, y, beta=2.0)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[1].item() == pytest.approx(0.0, abs=1e-9)  # score equals its quality target
    # worked: y=0.8, s=0.5 -> 0.09 * -(0.8 ln .5 + .2 ln .5) = 0.09 * 0.693147 = 0.062383
    assert got[2].item() == pytest.approx(0.062383, abs=1e-5)
    # beta = 0 is BCE with soft targets
    assert torch.allclose(quality_focal_loss(x, y, beta=0.0), bce, atol=1e-6)


def test_varifocal_weights_positives_by_quality_and_negatives_by_alpha_s_gamma():
    q = torch.tensor([0.0, 0.0, 0.6, 1.0])
    x = torch.tensor([logit(0.1), logit(0.7), logit(0.5), logit(0.9)])
    s = torch.sigmoid(x)
    got = varifocal_loss(x, q, alpha=0.75, gamma=2.0)
    neg = 0.75 * s[:2] ** 2 * -torch.log(1 - s[:2])
    pos = q[2:] * -(q[2:] * torch.log(s[2:]) + (1 - q[2:]) * torch.log(1 - s[2:]))
    assert torch.allclose(got, torch.cat([neg, pos]), atol=1e-6)
    # worked: negative with s=0.7: 0.75 * 0.49 * ln(1/0.3) = 0.442486
    assert got[1].item() == pytest.approx(0.75 * 0.49 * math.log(1 / 0.3), rel=1e-5)


def test_softmax_focal_against_formula_with_alpha_and_ignore():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [3.0, -2.0, 0.0]])
    targets = torch.tensor([0, 2, -100, 1])
    alpha = torch.tensor([0.2, 0.5, 0.8])
    p = torch.softmax(logits, 1)
    rows = [0, 1, 3]
    p_t = p[rows, targets[rows]]
    per = -alpha[targets[rows]] * (1 - p_t) ** 2 * torch.log(p_t)
    got_none = softmax_focal_loss(logits, targets, gamma=2.0, alpha=alpha, reduction="none")
    assert got_none[2].item() == 0.0
    assert torch.allclose(got_none[rows], per, atol=1e-6)
    assert softmax_focal_loss(logits, targets, gamma=2.0, alpha=alpha).item() == pytest.approx(
        per.mean().item(), rel=1e-5
    )
    # gamma = 0 without alpha is cross-entropy with the same ignore semantics
    ce = F.cross_entropy(logits, targets, ignore_index=-100)
    assert softmax_focal_loss(logits, targets, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-6)


def test_softmax_focal_dense_shapes_and_extremes():
    logits = torch.zeros(2, 4, 3, 3)
    logits[:, 0] = 100.0
    targets = torch.zeros(2, 3, 3, dtype=torch.long)
    targets[0, 0, 0] = 3  # confidently wrong
    out = softmax_focal_loss(logits.requires_grad_(), targets, reduction="none")
    assert out.shape == (2, 3, 3) and torch.isfinite(out).all()
    assert out[0, 0, 0].item() == pytest.approx(100.0, rel=1e-3)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, t: sigmoid_focal_loss(x, t, reduction="avg"), "expected one of 'none', 'mean', 'sum'"),
        (lambda x, t: sigmoid_focal_loss(x, t, gamma=-1), "gamma=-1.*>= 0"),
        (lambda x, t: sigmoid_focal_loss(x, t, alpha=1.5), r"alpha=1.5.*\[0, 1\]"),
        (lambda x, t: sigmoid_focal_loss(x, t[:2]), "Shape mismatch"),
        (lambda x, t: quality_focal_loss(x, t, beta=-2), "beta=-2"),
        (lambda x, t: varifocal_loss(x, t, alpha=None), r"alpha=None.*\[0, 1\]"),
        (lambda x, t: softmax_focal_loss(x.view(1, 4), t.long(), reduction="max"), "expected one of"),
        (
            lambda x, t: softmax_focal_loss(x.view(1, 4), torch.zeros(1).long(), alpha=[0.1, 0.2]),
            "one per class",
        ),
        (
            lambda x, t: softmax_focal_loss(x.view(1, 4), torch.zeros(1).long(), alpha=[0, 0, 0, 2]),
            r"\[0, 1\]",
        ),
        (lambda x, t: softmax_focal_loss(x.view(2, 2), torch.zeros(3).long()), "Shape mismatch"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_valid_options(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.zeros(4), torch.zeros(4))


def test_the_registry_is_the_one_list_of_classification_losses():
    from defectdet import losses as L

    assert L.CLS_LOSSES == ("bce", "focal", "qfl", "vfl") == tuple(L.CLS_LOSS_SPECS)
    x, t = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.9, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert torch.equal(L.cls_loss_spec("bce").fn(x, t, None, None), bce)
    assert torch.allclose(L.cls_loss_spec("focal").fn(x, t, 0.0, None), bce)  # gamma=0, no alpha: BCE
    assert torch.allclose(L.cls_loss_spec("qfl").fn(x, t, 2.0, None), L.quality_focal_loss(x, t, beta=2.0))
    assert L.cls_loss_spec("vfl").needs_alpha and L.cls_loss_spec("vfl").gain == 3.0
    with pytest.raises(
        ValueError, match=r"Invalid classification loss 'dice'; expected one of 'bce', 'focal'"
    ):
        L.cls_loss_spec("dice")
