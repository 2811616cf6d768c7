"""caf: downweighting along the top covariance direction; the mean of smallest top eigenvalue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import caf, get


def definition(x: np.ndarray, f: int) -> np.ndarray:
    """The filter as the paper states it, with the (d, d) weighted covariance and numpy's eigh."""
    n = len(x)
    c = np.ones(n)
    best, best_lam, first = None, np.inf, True
    while first or c.sum() > n - 2 * f:
        first = False
        mu = c @ x / c.sum()
        z = x - mu
        cov = (c[:, None] * z).T @ z / c.sum()
        values, vectors = np.linalg.eigh(cov)
        if values[-1] < best_lam:
            best, best_lam = mu, values[-1]
        if values[-1] <= 1e-12:
            break
        tau = (z @ vectors[:, -1]) ** 2
        c = c * (1 - tau / tau.max())
    return best


def test_hand_computed_one_dimension():
    # pass 1: mu = 2.5, variance 18.75, tau = z^2 = (6.25, 6.25, 6.25, 56.25): c = (8/9, 8/9, 8/9, 0), sum 8/3 > 2
    # pass 2: mu = 0 with variance 0 (smaller): the answer, and nothing is left to filter
    x = torch.tensor([[0.0], [0.0], [0.0], [10.0]])
    out = caf(f=1)(x, torch.ones(4))
    torch.testing.assert_close(out.update, torch.tensor([0.0]))
    assert out.selected.tolist() == [True, True, True, False] and out.info["passes"] == 2


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, 4))
    x[:2] += rng.standard_normal(4) * 6
    x = x.astype(np.float32).astype(np.float64)  # both sides see the same float32 rows
    out = caf(f=3)(torch.tensor(x, dtype=torch.float32), torch.ones(10))
    np.testing.assert_allclose(out.update.numpy(), definition(x, 3), rtol=1e-4, atol=1e-4)


def test_f_zero_is_the_mean_and_checks():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(caf(f=0)(x, torch.ones(6)).update, x.mean(0))
    with pytest.raises(ConfigError, match=r"^caf needs n > 2f; got n=4, f=2$"):
        get("caf", f=2).check_rows(4)
