"""autogm: a geometric median with learned simplex weights (rows beyond the water level get weight 0)."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import autogm, get
from poisonlab.fl.aggregators.autogm import simplex_weights


def test_hand_computed_water_level():
    # d = (0, 1, 5), lambda = 2: eta_1 = 2 > 0, eta_2 = (1 + 2) / 2 = 1.5 > 1, eta_3 = 8/3 < 5: eta = 1.5
    alpha = simplex_weights(torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64), 2.0)
    torch.testing.assert_close(alpha, torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64))
    # unsorted input, the same weights by row
    alpha = simplex_weights(torch.tensor([5.0, 0.0, 1.0], dtype=torch.float64), 2.0)
    torch.testing.assert_close(alpha, torch.tensor([0.0, 0.75, 0.25], dtype=torch.float64))


def test_a_large_lambda_is_the_geometric_median():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    out = autogm(lamb=1e9, ftol=0.0, max_iter=60)(x, torch.ones(9))
    want = get("geometric_median", ftol=0.0, max_iter=60)(x, torch.ones(9)).update
    torch.testing.assert_close(out.update, want, atol=1e-4, rtol=1e-4)
    assert out.selected.all()


def test_far_rows_get_weight_zero():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    x[:2] += 100.0
    out = autogm(lamb=20.0)(x, torch.ones(9))
    assert out.selected.tolist() == [False, False] + [True] * 7
    assert float((out.update - x[2:].mean(0)).norm()) < 2.0


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"^autogm: lamb=0 is out of range; accepted: finite number > 0$"):
        get("autogm", lamb=0)
