"""Permutation: the attacker's own update with its coordinates shuffled (norm and values kept, direction random)."""

from __future__ import annotations

import torch

from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def test_each_row_is_a_permutation_of_its_own_update():
    x = torch.randn(6, 200, generator=torch.Generator().manual_seed(1))
    mal = torch.tensor([True, False, True, False, False, True])
    out = get("permutation")(x, mal, RoundContext(round=3, seed=4))
    for i in (0, 2, 5):
        assert torch.equal(out[i].sort().values, x[i].sort().values)  # same multiset of values, so same norm
        assert not torch.equal(out[i], x[i])
        cos = float(out[i] @ x[i] / (out[i].norm() * x[i].norm()))
        assert abs(cos) < 0.3  # the direction is lost (|cos| ~ 1/sqrt(200) for a random permutation)
    assert not torch.equal(out[0].argsort(), out[2].argsort())  # each row its own permutation
    assert torch.equal(out, get("permutation")(x, mal, RoundContext(round=3, seed=4)))
    assert not torch.equal(out, get("permutation")(x, mal, RoundContext(round=4, seed=4)))
