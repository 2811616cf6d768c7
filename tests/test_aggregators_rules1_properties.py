"""The rules1 rules together: permutation invariance, translation equivariance, bounded output under
f < n / 2 outliers of any size, and the pre-aggregators' composition through chain."""

from __future__ import annotations

import pytest
import torch

from poisonlab.fl.aggregators import arc, bucketing, chain, get, krum, median, nnm
from poisonlab.fl.types import RoundContext
from poisonlab.rng import numpy_rng

G0 = "server_update"
RULES = {
    "bucketing+median": lambda: chain(bucketing(s=2), median()),
    "nnm+median": lambda: chain(nnm(f=3), median()),
    "arc+krum": lambda: chain(arc(f=3), krum(f=3)),
    "meamed": lambda: get("meamed", f=3),
    "mda": lambda: get("mda", f=3),
    "smea": lambda: get("smea", f=3),
    "caf": lambda: get("caf", f=3),
    "dnc": lambda: get("dnc", f=3, b=6),
    "monna": lambda: get("monna", f=3, trusted=7),
    "gm_of_means": lambda: get("gm_of_means", groups=10, ftol=0.0, max_iter=60),
    "autogm": lambda: get("autogm", lamb=50.0, ftol=0.0, max_iter=30),
}
EQUIVARIANT = [name for name in RULES if name not in ("arc+krum",)]  # clipping depends on the origin
BOUNDED = [name for name in RULES if name != "bucketing+median"]  # s = 2 lets 3 attackers spoil 3 of 5 buckets
# (the paper needs s <= n / (2f)); test_aggregators_bucketing checks 2 attackers of 12


def data(seed: int, k: int = 10, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    rng = numpy_rng(seed, "rules1", k, d)
    x = rng.standard_normal((k, d)) * rng.uniform(0.3, 3.0, (k, 1))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(rng.uniform(0.5, 2.0, k), dtype=torch.float32)


def ctx(ids: torch.Tensor, seed: int = 0, g0: torch.Tensor | None = None) -> RoundContext:
    return RoundContext(round=3, num_clients=len(ids), sampled=ids, seed=seed,
                        extras={} if g0 is None else {G0: g0})


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariance(name, seed):
    x, w = data(seed)
    perm = torch.from_numpy(numpy_rng(seed, "perm").permutation(len(x)))
    ids = torch.arange(len(x))
    a = RULES[name]()(x, w, ctx(ids, seed))
    b = RULES[name]()(x[perm], w[perm], ctx(ids[perm], seed))
    torch.testing.assert_close(b.update, a.update, atol=2e-4, rtol=1e-4)
    assert torch.equal(b.selected, a.selected[perm])


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_translation_equivariance(name):
    x, w = data(7)
    shift = torch.linspace(-20.0, 30.0, x.shape[1])
    ids = torch.arange(len(x))
    a = RULES[name]()(x, w, ctx(ids))
    b = RULES[name]()(x + shift, w, ctx(ids))
    torch.testing.assert_close(b.update, a.update + shift, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("name", BOUNDED)
@pytest.mark.parametrize("scale", [1e3, -1e6, 1e9])
def test_three_outliers_of_ten_do_not_carry_the_output_away(name, scale):
    """Below the breakdown point (f = 3 < n / 2) the output stays near the honest rows whatever the outliers'
    size; the mean would move by about scale * 3 / 10."""
    honest, w = data(11, k=7)
    bad = torch.full((3, honest.shape[1]), scale) * torch.tensor([1.0, -0.5, 0.3, 1.0, -1.0, 0.7])
    x = torch.cat([bad, honest])
    out = RULES[name]()(x, torch.ones(10), ctx(torch.arange(10))).update
    assert float(out.norm()) < 3 * float(honest.norm(dim=1).max()), (name, out)
