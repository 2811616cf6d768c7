"""mda: the mean of the n - f rows of smallest diameter, by exact subset search (with a limit)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, mda


def brute_force(x: np.ndarray, f: int) -> tuple[set, float]:
    """The definition, one subset at a time: (rows of the smallest-diameter subset, its diameter)."""
    n = len(x)
    best = (None, np.inf)
    for subset in itertools.combinations(range(n), n - f):
        diam = max((np.linalg.norm(x[i] - x[j]) for i, j in itertools.combinations(subset, 2)), default=0.0)
        if diam < best[1]:
            best = (set(subset), diam)
    return best


def test_hand_computed():
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    # subsets of 3: {0,1,3} diameter 3, {0,1,10} 10, {0,3,10} 10, {1,3,10} 9
    out = mda(f=1)(x, torch.ones(4))
    torch.testing.assert_close(out.update, torch.tensor([4 / 3]))
    assert out.selected.tolist() == [True, True, True, False] and out.info["diameter"] == pytest.approx(3.0)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 3)) * rng.uniform(0.5, 3, (8, 1))
    f = seed % 3 + 1
    rows, diam = brute_force(x, f)
    out = mda(f=f)(torch.tensor(x, dtype=torch.float32), torch.ones(8))
    assert set(torch.nonzero(out.selected).flatten().tolist()) == rows
    assert out.info["diameter"] == pytest.approx(diam, rel=1e-5)


def test_rows_far_away_are_never_chosen():
    """With f outliers far from n - f tight honest rows, the all-honest subset has the smallest diameter."""
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    x[:3] += torch.tensor([1e3, -1e3, 5e2])[:, None]
    out = mda(f=3)(x, torch.ones(10))
    assert out.selected.tolist() == [False] * 3 + [True] * 7


def test_refuses_a_search_over_too_many_subsets():
    get("mda", f=2).check_rows(100)  # C(100, 2) = 4950
    with pytest.raises(ConfigError, match=r"^mda searches all C\(n, f\) = C\(100, 5\) = 75287520 subsets exactly,"
                                          r" above max_subsets=100000; accepted: a smaller f or n, or a larger"
                                          r" max_subsets$"):
        get("mda", f=5).check_rows(100)
    with pytest.raises(ConfigError, match=r"^mda needs n > 2f; got n=4, f=2$"):
        get("mda", f=2).check_rows(4)
