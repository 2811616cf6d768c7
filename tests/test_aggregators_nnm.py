"""nnm: each row becomes the mean of its n - f nearest rows; composed through chain."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import chain, get, krum, median, nnm


def test_hand_computed_mixing():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    agg = nnm(f=1).step(x, torch.ones(4))
    # n - f = 3 nearest (itself included): {0, 1, 2} for the first three rows, {10, 2, 1} for the last
    torch.testing.assert_close(agg.rows, torch.tensor([[1.0], [1.0], [1.0], [13 / 3]]))
    torch.testing.assert_close(agg.scores, torch.tensor([1.0, 0.0, 1.0, 17 / 3]))
    torch.testing.assert_close(nnm(f=1)(x, torch.ones(4)).update, torch.tensor([(3 + 13 / 3) / 4]))
    torch.testing.assert_close(chain(nnm(f=1), median())(x, torch.ones(4)).update, torch.tensor([1.0]))


def test_mixing_pulls_an_outlier_towards_the_majority_for_krum():
    """Each mixed row averages n - f rows, so an attacker's row is diluted to at most f/(n-f) of the mix."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, generator=g)
    x[:2] = 1e4
    mixed = nnm(f=2).step(x, torch.ones(9)).rows
    honest_mean = x[2:].mean(0)
    assert float((mixed[2:] - honest_mean).norm(dim=1).max()) < 10  # honest rows mix honest rows only
    out = chain(nnm(f=2), krum(f=2))(x, torch.ones(9)).update
    assert float((out - honest_mean).norm()) < 10


def test_f_zero_is_the_plain_mean_for_every_row_and_checks():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(nnm(f=0).step(x, torch.ones(5)).rows, x.mean(0).expand(5, 3))
    with pytest.raises(ConfigError, match=r"^nnm needs n > 2f; got n=4, f=2$"):
        nnm(f=2).check_rows(4)
    with pytest.raises(ConfigError, match=r"^nnm: f=-1 is out of range"):
        get("nnm", f=-1)
