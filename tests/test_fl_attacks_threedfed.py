"""3DFed (Li et al. 2023), update-level: indicator feedback, adaptive boost and decoys, zero-sum noise masks."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get as get_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def rounds(attack, rule: str, n: int = 2):
    """n rounds of 6 honest + 4 malicious rows (d = 200) against a rule; the attack's state after each round."""
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(1, 200, generator=g) + 0.3 * torch.randn(6, 200, generator=g)
    x = torch.cat([honest, honest[:4] + 0.5])  # the backdoor-trained rows: honest plus a shift
    mal = torch.arange(10) >= 6
    params, states, state = torch.zeros(200), [], None
    for r in range(n):
        ctx = RoundContext(num_clients=10, round=r, global_params=params, attack_state=state, malicious=mal)
        out = attack(x, mal, ctx)
        state = attack.next_state(x, out, mal, ctx)
        params = params + get_rule(rule)(out, torch.ones(10), ctx).update
        states.append(state)
    return states, x, mal


def test_feedback_raises_the_boost_when_accepted_and_adds_a_decoy_when_rejected():
    accepted, _, _ = rounds(get("threedfed"), "mean")
    assert accepted[1]["boost"] == 3.0 and accepted[1]["decoys"] == 0  # 2.0 x up
    rejected, _, _ = rounds(get("threedfed"), "median")  # the median ignores the indicator coordinates
    assert rejected[1]["boost"] == 1.0 and rejected[1]["decoys"] == 1  # 2.0 x down
    fixed, _, _ = rounds(get("threedfed", adaptive=False), "median")
    assert fixed[1]["boost"] == 2.0 and fixed[1]["decoys"] == 0


def test_noise_masks_cancel_and_decoys_send_the_benign_mean():
    _, x, mal = rounds(get("threedfed"), "mean", n=1)
    ctx = RoundContext(num_clients=10, round=0)
    plain = get("threedfed", noise=0.0)(x, mal, ctx)[mal]
    masked = get("threedfed", noise=0.5)(x, mal, ctx)[mal]
    assert torch.allclose(plain, plain[0].expand(4, 200))
    assert not torch.allclose(masked[0], masked[1])
    assert torch.allclose(masked.mean(dim=0), plain[0], atol=1e-5)  # zero-sum masks keep the rows' mean
    state = {"boost": 2.0, "decoys": 2}  # no feedback (no global model): the kept tuning is used
    out = get("threedfed")(x, mal, RoundContext(num_clients=10, round=3, attack_state=state))[mal]
    assert torch.allclose(out[2:], x[~mal].mean(dim=0).expand(2, 200))
    assert not torch.allclose(out[0], x[~mal].mean(dim=0))


def test_bad_parameters_are_one_line_errors():
    for bad in ({"boost": 100.0}, {"down": 1.5}, {"indicators": -1}, {"threshold": 2.0}, {"up": 0.5}):
        with pytest.raises(ConfigError):
            get("threedfed", **bad)
