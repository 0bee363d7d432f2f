"""Defect-aware sampling: the weights against their formulas, the sampler's drawn frequencies,
determinism per seed, multi-GPU slices, and one-line errors for bad values."""

import math

import numpy as np
import pytest

from defectdet.errors import ConfigError
from defectdet.sampling import WeightedEpochSampler, check_sampling, image_weights

# 10 images: 6 defect-free, 3 with class 0, 1 with class 1 (and class 0)
CLASSES = [np.array([])] * 6 + [np.array([0]), np.array([0, 0]), np.array([0]), np.array([1, 0])]


def test_defect_sampling_gives_the_target_share_and_favours_rare_classes():
    w = image_weights(CLASSES, nc=2, mode="defect", defect_fraction=0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[6:].sum() == pytest.approx(0.5)  # defective images: half of every draw
    assert np.allclose(w[:6], 0.5 / 6)  # good parts share the rest equally
    # among defective images, f_0 = 4/4, f_1 = 1/4 -> r_1 = sqrt(1 / 0.25) = 2 for the image with class 1
    r = np.array([1, 1, 1, 2.0])
    assert np.allclose(w[6:], 0.5 * r / r.sum())  # 0.1, 0.1, 0.1, 0.2


def test_defect_sampling_never_lowers_a_share_that_is_already_higher():
    classes = [np.array([])] * 2 + [np.array([0])] * 8  # 80% defective
    w = image_weights(classes, nc=1, mode="defect", defect_fraction=0.5)
    assert w[2:].sum() == pytest.approx(0.8) and np.allclose(w, 0.1)
    assert np.allclose(image_weights([np.array([0])] * 4, 1, "defect"), 0.25)  # no defect-free image: uniform


def test_repeat_factor_sampling_is_the_lvis_formula():
    # all 10 images: f_0 = 4/10, f_1 = 1/10; t = 0.1 -> r_0 = max(1, sqrt(0.1/0.4)) = 1, r_1 = max(1, sqrt(1))
    # = 1
    assert np.allclose(image_weights(CLASSES, 2, "repeat", repeat_thresh=0.1), 0.1)
    # t = 0.4 -> r_0 = 1, r_1 = sqrt(0.4 / 0.1) = 2: the class-1 image weighs twice as much
    w = image_weights(CLASSES, 2, "repeat", repeat_thresh=0.4)
    assert np.allclose(w * 11, [1] * 9 + [2])


def test_uniform_is_uniform():
    assert np.allclose(image_weights(CLASSES, 2, "uniform"), 0.1)


def test_sampler_draws_with_the_weights_and_keeps_the_epoch_length():
    w = image_weights(CLASSES, nc=2, mode="defect", defect_fraction=0.5)
    s = WeightedEpochSampler(w, seed=0)
    draws = np.concatenate([list(s) for _ in range(3000)])  # 3000 epochs of 10
    assert len(s) == 10 and len(draws) == 30000
    freq = np.bincount(draws, minlength=10) / len(draws)
    assert np.allclose(freq, w, atol=0.006)  # binomial sd at p=0.2: 0.0023
    assert freq[6:].sum() == pytest.approx(0.5, abs=0.01)


def test_sampler_is_deterministic_per_seed_and_epoch():
    w = np.full(50, 1 / 50)
    a, b, c = (
        WeightedEpochSampler(w, seed=1),
        WeightedEpochSampler(w, seed=1),
        WeightedEpochSampler(w, seed=2),
    )
    first_a, first_b, first_c = list(a), list(b), list(c)
    assert first_a == first_b and first_a != first_c
    assert list(a) != first_a  # the next pass is another epoch
    a.set_epoch(0)
    assert list(a) == first_a


def test_ranks_take_disjoint_slices_of_one_global_draw():
    w = np.linspace(1, 2, 11)
    ranks = [WeightedEpochSampler(w, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(5)
    parts = [list(s) for s in ranks]
    assert [len(p) for p in parts] == [6, 6] == [len(s) for s in ranks]  # ceil(11 / 2)
    glob = ranks[0].indices(5)
    assert parts[0] == glob[0::2].tolist() and parts[1] == glob[1::2].tolist()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "foo"}, r"sampling='foo': expected one of uniform, defect, repeat"),
        ({"mode": "defect", "defect_fraction": 2}, r"defect_fraction=2: expected a number in \(0, 1\)"),
        ({"mode": "defect", "defect_fraction": "half"}, r"defect_fraction='half'"),
        ({"mode": "repeat", "repeat_thresh": 0}, r"repeat_thresh=0: expected null or a number in \(0, 1\]"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        check_sampling(kwargs.pop("mode"), **kwargs)


def test_sampler_refuses_weights_that_cannot_be_drawn():
    for bad in ([], [0, 0], [1, -1], [math.nan, 1]):
        with pytest.raises(ValueError, match="weights must be"):
            WeightedEpochSampler(np.array(bad, dtype=float))
