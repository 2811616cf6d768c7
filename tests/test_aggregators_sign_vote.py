"""signsgd_vote and robust_lr: hand-computed rounds and their defining properties."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, robust_lr, signsgd_vote


def test_signsgd_vote_by_hand():
    # signs per column: (+, +, -) -> +; (-, -, -) -> -; (0, 0, +) -> +; (+, -, -) -> -
    x = torch.tensor([[1.0, -2.0, 0.0, 3.0], [2.0, -1.0, 0.0, -1.0], [-1.0, -3.0, 5.0, -2.0]])
    out = signsgd_vote(step=0.5)(x, torch.ones(3))
    assert out.update.tolist() == [0.5, -0.5, 0.5, -0.5]
    # a zero-weight client does not vote: column 2 has no vote (0, 0) and column 3 ties (+, -)
    out = signsgd_vote(step=1.0)(x, torch.tensor([1.0, 1.0, 0.0]))
    assert out.update.tolist() == [1.0, -1.0, 0.0, 0.0] and out.info["ties"] == 2
    assert out.selected.tolist() == [True, True, False]


def test_signsgd_vote_ignores_magnitudes_and_order():
    """One vote per client: scaling a row by 1e6 or permuting rows leaves the vote unchanged, and a minority
    of clients (sending anything) cannot flip a coordinate on which the majority agrees."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 40, generator=g)
    base = signsgd_vote()(x, torch.ones(9)).update
    y = x.clone()
    y[3] *= 1e6
    assert torch.equal(signsgd_vote()(y, torch.ones(9)).update, base)
    assert torch.equal(signsgd_vote()(x[torch.randperm(9, generator=g)], torch.ones(9)).update, base)
    honest = torch.rand(5, 40, generator=g) + 0.1  # all positive
    attack = -1e9 * torch.ones(4, 40)
    assert bool((signsgd_vote()(torch.cat([honest, attack]), torch.ones(9)).update > 0).all())


def test_robust_lr_by_hand():
    # column 0: signs (+, +, +, +), |sum| = 4 >= 3: kept, mean 1.25; column 1: (+, -, +, +), |sum| = 2 < 3:
    # the rate flips, -mean = -(2 - 1 + 1 + 1) / 4 = -0.75
    x = torch.tensor([[1.0, 2.0], [1.0, -1.0], [1.0, 1.0], [2.0, 1.0]])
    out = robust_lr(threshold=3)(x, torch.ones(4))
    assert out.update.tolist() == [1.25, -0.75] and out.info["flipped"] == 1


def test_robust_lr_threshold_one_is_the_mean_and_too_few_clients_is_refused():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 30, generator=g)  # odd k, no zeros: |sum of signs| >= 1 everywhere
    w = torch.rand(7, generator=g) + 0.1
    assert torch.allclose(robust_lr(threshold=1)(x, w).update, get("mean")(x, w).update)
    with pytest.raises(ConfigError, match=r"^robust_lr: threshold=8 needs at least 8 clients per round; got 7"):
        robust_lr(threshold=8)(x, w)


@pytest.mark.parametrize("name,params,match", [
    ("signsgd_vote", {"step": 0}, r"^signsgd_vote: step=0 is out of range"),
    ("robust_lr", {"threshold": 0}, r"^robust_lr: threshold=0 is out of range"),
    ("robust_lr", {"threshold": 2.5}, r"^robust_lr: threshold=2.5 must be an integer"),
])
def test_bad_parameters_are_one_line(name, params, match):
    with pytest.raises(ConfigError, match=match) as err:
        get(name, **params)
    assert "\n" not in str(err.value)


def test_robust_lr_moves_against_a_minority_pushing_a_coordinate_honest_clients_leave_alone():
    """The defining property: where fewer than threshold clients agree (a backdoor coordinate that honest
    clients do not touch), the server rate flips and the model moves against the attackers' push."""
    honest = torch.tensor([[1.0, 0.0]] * 6)
    attackers = torch.tensor([[1.0, 5.0]] * 2)
    out = robust_lr(threshold=4)(torch.cat([honest, attackers]), torch.ones(8))
    assert out.update.tolist() == [1.0, -1.25] and out.info["flipped"] == 1
