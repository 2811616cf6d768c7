"""three_sigma: a hand-computed round, Samuelson's bound (small rounds drop nothing), permutation invariance."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, three_sigma


def test_three_sigma_by_hand():
    # norms: ten 1s and one 100; mu = 110 / 11 = 10, sd = sqrt((10 * 81 + 90^2) / 11) = sqrt(810);
    # |100 - 10| = 90 > 3 sqrt(810) = 85.4: dropped; the ten 1s (|1 - 10| = 9) kept; z of the outlier = sqrt(10)
    x = torch.tensor([[1.0]] * 10 + [[100.0]])
    out = three_sigma(score="norm")(x, torch.ones(11))
    assert out.selected.tolist() == [True] * 10 + [False]
    assert out.update.tolist() == pytest.approx([1.0])
    assert out.scores[-1].item() == pytest.approx(math.sqrt(10), rel=1e-6)
    assert out.scores[0].item() == pytest.approx(9 / math.sqrt(810), rel=1e-6)


@pytest.mark.parametrize("score", ["norm", "median_distance", "mean_distance"])
def test_no_row_is_dropped_in_rounds_of_at_most_ten(score):
    """|s_i - mu| <= sd sqrt(k - 1) (Samuelson): with k <= 10 rows, 3 sigma never bites, however far a row is."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 20, generator=g)
    x[0] *= 1e6
    out = three_sigma(score=score)(x, torch.ones(10))
    assert bool(out.selected.all()) and float(out.scores.max()) <= 3.0 + 1e-9


@pytest.mark.parametrize("score", ["norm", "median_distance", "mean_distance"])
def test_far_row_of_a_large_round_is_dropped_and_order_does_not_matter(score):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 20, generator=g)
    x[7] += 1e3
    w = torch.rand(30, generator=g) + 0.5
    out = three_sigma(score=score)(x, w)
    assert out.selected.tolist() == [i != 7 for i in range(30)]
    keep = torch.arange(30) != 7
    assert torch.allclose(out.update, get("mean")(x[keep], w[keep]).update, atol=1e-6)
    perm = torch.randperm(30, generator=g)
    assert torch.allclose(three_sigma(score=score)(x[perm], w[perm]).update, out.update, atol=1e-6)


def test_bad_parameters_are_one_line():
    with pytest.raises(ConfigError, match=r"^three_sigma: score='cos' is not known; accepted: norm, median_distance"):
        get("three_sigma", score="cos")
    with pytest.raises(ConfigError, match=r"^three_sigma: n_sigma=-1 is out of range"):
        get("three_sigma", n_sigma=-1)
