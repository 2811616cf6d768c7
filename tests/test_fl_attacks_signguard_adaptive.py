"""The SignGuard-adapted attack (Blades): a random row with the benign mean's sign counts and the median benign norm."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get as get_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def test_the_row_matches_the_sign_counts_and_the_median_norm():
    x = torch.tensor([[1.0, -2.0, 0.0, 3.0, 1.0], [2.0, -1.0, 0.0, 1.0, -4.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    mal = torch.tensor([False, False, True])
    out = get("signguard_adaptive", scale=2.0)(x, mal, RoundContext(round=1, seed=0))[2]
    # benign mean (1.5, -1.5, 0, 2, -1.5): 2 positive, 2 negative, 1 zero coordinate
    assert int((out > 0).sum()) == 2 and int((out < 0).sum()) == 2 and int((out == 0).sum()) == 1
    median_norm = float(x[:2].norm(dim=1).median())
    assert abs(float(out.norm()) - 2.0 * median_norm) < 1e-5
    with pytest.raises(ConfigError, match="scale"):
        get("signguard_adaptive", scale=0.0)


def test_signguard_on_all_coordinates_admits_the_rows():
    """With fraction=1 (Blades' SignGuard looks at every coordinate) the rows' sign shares are the mean's exactly."""
    g = torch.Generator().manual_seed(3)
    honest = torch.randn(1, 500, generator=g) + 0.3 * torch.randn(16, 500, generator=g)
    x = torch.cat([honest, torch.zeros(4, 500)])
    mal = torch.arange(20) >= 16
    out = get("signguard_adaptive")(x, mal, RoundContext(num_clients=20, round=0, seed=1))
    agg = get_rule("signguard", fraction=1.0)(out, torch.ones(20), RoundContext(num_clients=20, malicious=mal))
    assert bool(agg.selected[mal].all())  # norm and sign statistics both pass
