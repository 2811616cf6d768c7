"""dnc: drop the rows most aligned with the top singular direction of random coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import dnc, get
from poisonlab.fl.types import RoundContext


def test_hand_computed_two_dimensions():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [10.0, 10.0]])
    out = dnc(f=1, b=2)(x, torch.ones(5))
    assert out.selected.tolist() == [True, True, True, True, False]
    torch.testing.assert_close(out.update, torch.zeros(2))


def test_scores_are_the_squared_projections_on_the_top_singular_vector():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5))
    out = dnc(f=2, b=5)(torch.tensor(x, dtype=torch.float32), torch.ones(7))
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred)
    share = (centred @ vt[0]) ** 2 / s[0] ** 2
    np.testing.assert_allclose(out.scores.numpy(), share, rtol=1e-4, atol=1e-6)
    assert set(torch.nonzero(~out.selected).flatten().tolist()) == set(np.argsort(-share)[:2].tolist())


def test_coordinates_come_from_the_seed_and_round():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 400, generator=g)
    x[0, :200] += 3.0  # an attacker visible on some coordinates only
    rule = dnc(f=1, b=20, iterations=2)
    a, b = (rule(x, torch.ones(8), RoundContext(round=3, seed=5)) for _ in range(2))
    assert torch.equal(a.update, b.update)
    others = {tuple(rule(x, torch.ones(8), RoundContext(round=r, seed=5)).scores.tolist()) for r in range(3)}
    assert len(others) == 3


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"^dnc: b=0 is out of range; accepted: integer >= 1$"):
        get("dnc", b=0)
    with pytest.raises(ConfigError, match=r"^dnc needs n > int\(c \* f\); got n=2, c=1.0, f=2$"):
        get("dnc", f=2).check_rows(2)
