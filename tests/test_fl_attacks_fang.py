"""Fang et al. 2020: the Krum attack's lambda by hand and Krum picking the crafted row; the trim attack's ranges."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get as get_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.attacks.fang import krum_lambda_bound
from poisonlab.fl.types import RoundContext


def krum_case() -> tuple[torch.Tensor, torch.Tensor]:
    """6 honest rows 0.1 * 1 + 3 e_i in d = 6, then 2 malicious rows (their own updates: 0.2 * 1)."""
    honest = 0.1 + 3 * torch.eye(6, dtype=torch.float64)
    rows = torch.cat([honest, torch.full((2, 6), 0.2, dtype=torch.float64)])
    return rows, torch.arange(8) >= 6


def test_krum_lambda_bound_by_hand():
    rows, mal = krum_case()
    # honest pairwise distance 3 sqrt 2; n - c - 2 = 4 neighbours; n - 2c - 1 = 3; max norm sqrt(5 * 0.01 + 3.1^2)
    expected = 4 * 3 * math.sqrt(2) / (3 * math.sqrt(6)) + math.sqrt(0.05 + 3.1 ** 2) / math.sqrt(6)
    assert krum_lambda_bound(rows[~mal], 8, 2) == pytest.approx(expected, rel=1e-12)


def test_fang_krum_makes_krum_pick_the_crafted_row():
    rows, mal = krum_case()
    out = get("fang_krum")(rows, mal, RoundContext(num_clients=8))
    bound = krum_lambda_bound(rows[~mal], 8, 2)
    # by hand: a crafted copy wins while 6u^2 + 6u - 15 < 0 (u = 0.1 + lambda), i.e. lambda < 1.058;
    # the bound 3.578 and its half fail, the quarter 0.894 succeeds
    torch.testing.assert_close(out[mal], torch.full((2, 6), -bound / 4, dtype=torch.float64))
    assert torch.equal(out[~mal], rows[~mal])
    picked = get_rule("krum", f=2)(out, torch.ones(8, dtype=torch.float64)).selected
    assert bool(picked[mal].any()) and not bool(picked[~mal].any())


def test_fang_krum_gives_up_below_epsilon_where_krum_cannot_be_fooled():
    rows = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [0.0], [0.0]], dtype=torch.float64)
    mal = torch.arange(8) >= 6
    out = get("fang_krum", epsilon=1e-3)(rows, mal, RoundContext(num_clients=8))
    # 1-D honest spread: a crafted copy's Krum score is at least 1 + 4 + 9 = 14 > 10, so lambda halves below 1e-3
    assert 0 > float(out[6, 0]) > -1e-3


def trim_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Honest columns for the four cases of the definition, then 2 malicious rows."""
    honest = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 2.0, -2.0, -2.0], [3.0, 3.0, -3.0, -3.0]],
                          dtype=torch.float64)
    return torch.cat([honest, torch.zeros(2, 4, dtype=torch.float64)]), torch.arange(5) >= 3


def test_fang_trim_full_knowledge_ranges_by_hand():
    rows, mal = trim_case()
    out = get("fang_trim")(rows, mal, RoundContext(num_clients=5, seed=3))
    crafted = out[mal]
    # s = (+1, +1, -1, -1); ranges with b = 2: [0.5, 1], [-2, -1], [1, 2], [-1, -0.5]
    low = torch.tensor([0.5, -2.0, 1.0, -1.0], dtype=torch.float64)
    high = torch.tensor([1.0, -1.0, 2.0, -0.5], dtype=torch.float64)
    assert bool(((crafted >= low) & (crafted <= high)).all())
    assert crafted[0, 0] != crafted[1, 0]  # one draw per row and coordinate
    # the defining effect: the median moves against s in every coordinate
    shift = get_rule("median")(out, torch.ones(5)).update - rows[~mal].median(dim=0).values
    assert torch.equal(torch.sign(shift), torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))


def test_fang_trim_partial_knowledge_uses_own_mean_and_std():
    rows, mal = trim_case()
    rows[3] = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    rows[4] = torch.tensor([3.0, 3.0, -3.0, -3.0], dtype=torch.float64)
    out = get("fang_trim")(rows, mal, RoundContext(num_clients=5, omniscient=False))
    # own mean (2, 2, -2, -2), std 1: s = (+1, +1, -1, -1) -> [-2, -1] for the first two, [1, 2] for the others
    low = torch.tensor([-2.0, -2.0, 1.0, 1.0], dtype=torch.float64)
    crafted = out[mal]
    assert bool(((crafted >= low) & (crafted <= low + 1)).all())


def test_fang_bad_parameters():
    with pytest.raises(ConfigError, match="b="):
        get("fang_trim", b=1.0)
    with pytest.raises(ConfigError, match="epsilon"):
        get("fang_krum", epsilon=0.0)
