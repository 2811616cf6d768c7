"""gm_of_means: the geometric median of the means of random groups."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, gm_of_means
from poisonlab.fl.types import RoundContext


def test_one_group_is_the_weighted_mean_and_n_groups_the_geometric_median():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(7, 3, generator=g), torch.arange(1.0, 8.0)
    torch.testing.assert_close(gm_of_means(groups=1)(x, w).update, (w[:, None] * x).sum(0) / w.sum())
    torch.testing.assert_close(gm_of_means(groups=7, ftol=0.0)(x, w).update,
                               get("geometric_median", ftol=0.0)(x, w).update, atol=1e-5, rtol=1e-5)


def test_hand_computed_one_dimension():
    out = gm_of_means(groups=3)(torch.tensor([[0.0], [1.0], [100.0]]), torch.ones(3))
    torch.testing.assert_close(out.update, torch.tensor([1.0]), atol=1e-4, rtol=0)  # the 1-D median


def test_groups_are_balanced_keyed_by_client_and_an_attacker_spoils_one():
    x = torch.zeros(10, 2)
    x[4] = 1e6
    ctx = RoundContext(round=1, num_clients=10, sampled=torch.arange(10), seed=2)
    out = gm_of_means(groups=5)(x, torch.ones(10), ctx)
    assert sorted(torch.bincount(torch.tensor(out.info["group"])).tolist()) == [2] * 5
    assert float(out.update.abs().max()) < 1.0  # 4 honest group means at 0 out-vote the spoiled one
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    again = gm_of_means(groups=5)(x[perm], torch.ones(10), RoundContext(round=1, num_clients=10,
                                                                       sampled=perm, seed=2))
    assert again.info["group"] == torch.tensor(out.info["group"])[perm].tolist()


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"^gm_of_means needs n >= groups; got n=2, groups=3$"):
        get("gm_of_means").check_rows(2)
    with pytest.raises(ConfigError, match=r"^gm_of_means: groups=0 is out of range"):
        get("gm_of_means", groups=0)
