"""Alternating minimization (Bhagoji et al. 2019), update-level: the boosted malicious component within the benign spread."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def test_hand_computed_boost_and_stealth_bound():
    mal = torch.tensor([False, False, True])
    ctx = RoundContext(num_clients=3)
    # honest mean (1, 0), largest honest distance to it 1; boost k / m = 3
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.3]], dtype=torch.float64)
    assert torch.allclose(get("alt_min")(x, mal, ctx)[2], torch.tensor([1.0, 0.9], dtype=torch.float64))
    assert torch.allclose(get("alt_min", radius=0.5)(x, mal, ctx)[2], torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert torch.allclose(get("alt_min", boost=2.0, slack=2.0)(x, mal, ctx)[2],
                          torch.tensor([1.0, 0.6], dtype=torch.float64))
    x[2] = torch.tensor([1.0, 2.0])  # boosted step (0, 6) is pulled back to the radius
    assert torch.allclose(get("alt_min")(x, mal, ctx)[2], torch.tensor([1.0, 1.0], dtype=torch.float64))
    for bad in ({"boost": 0.0}, {"slack": -1.0}, {"radius": -0.1}):
        with pytest.raises(ConfigError):
            get("alt_min", **bad)


def test_rows_stay_within_the_benign_range_and_keep_the_malicious_direction():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 40, generator=g, dtype=torch.float64)
    mal = torch.arange(12) >= 9
    out = get("alt_min")(x, mal, RoundContext(num_clients=12))
    centre = x[~mal].mean(dim=0)
    radius = float((x[~mal] - centre).norm(dim=1).max())
    for i in (9, 10, 11):
        step = out[i] - centre
        assert float(step.norm()) <= radius + 1e-9  # the paper's stealth check: within the benign distances
        direction = x[i] - centre
        assert float(step @ direction / (step.norm() * direction.norm())) > 1 - 1e-9  # same malicious direction


def test_non_omniscient_estimates_the_benign_update_from_the_global_models():
    attack = get("alt_min", radius=10.0, boost=2.0)
    x = torch.tensor([[5.0, 5.0], [1.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    mal = torch.tensor([False, True, True])
    first = RoundContext(round=0, omniscient=False, global_params=torch.zeros(2, dtype=torch.float64))
    state = attack.next_state(x, attack(x, mal, first), mal, first)
    ctx = RoundContext(round=1, omniscient=False, server_lr=0.5, attack_state=state,
                       global_params=torch.tensor([0.5, 0.0], dtype=torch.float64))
    # estimate (G1 - G0) / eta = (1, 0); rows 1 + 2 (x - (1, 0))
    out = attack(x, mal, ctx)
    assert torch.allclose(out[1], torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(out[2], torch.tensor([5.0, 2.0], dtype=torch.float64))
