"""smea: the mean of the n - f rows whose covariance has the smallest top eigenvalue (exact search)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, smea


def brute_force(x: np.ndarray, f: int) -> tuple[set, float]:
    """The definition: every subset's (d, d) covariance (1/|S| normalisation) and its top eigenvalue."""
    best = (None, np.inf)
    for subset in itertools.combinations(range(len(x)), len(x) - f):
        s = x[list(subset)]
        cov = (s - s.mean(0)).T @ (s - s.mean(0)) / len(s)
        top = np.linalg.eigvalsh(cov)[-1]
        if top < best[1]:
            best = (set(subset), top)
    return best


def test_hand_computed():
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    # variances of the 3-subsets: {0,1,3} 42/27, {0,1,10} 546/27, {0,3,10} 438/27, {1,3,10} 402/27
    out = smea(f=1)(x, torch.ones(4))
    torch.testing.assert_close(out.update, torch.tensor([4 / 3]))
    assert out.info["max_eigenvalue"] == pytest.approx(42 / 27)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 3)) * rng.uniform(0.5, 3, (8, 1))
    f = seed % 3 + 1
    rows, top = brute_force(x, f)
    out = smea(f=f)(torch.tensor(x, dtype=torch.float32), torch.ones(8))
    assert set(torch.nonzero(out.selected).flatten().tolist()) == rows
    assert out.info["max_eigenvalue"] == pytest.approx(top, rel=1e-4)


def test_an_outlier_subset_is_never_chosen_and_limits():
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(2))
    x[[2, 6]] = x[[2, 6]] * 50
    assert torch.nonzero(~smea(f=2)(x, torch.ones(9)).selected).flatten().tolist() == [2, 6]
    with pytest.raises(ConfigError, match=r"^smea searches all C\(n, f\) = C\(30, 5\) = 142506 subsets exactly"):
        get("smea", f=5).check_rows(30)
    get("smea", f=5, max_subsets=200_000).check_rows(30)
    with pytest.raises(ConfigError, match=r"^smea: max_subsets=0 is out of range"):
        get("smea", max_subsets=0)
