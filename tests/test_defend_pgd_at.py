"""PGD adversarial training (Madry et al. 2018): one PGD step by hand on a tiny linear model, the projection
on the epsilon-ball and [0, 1], bad params refused, the caller's modules untouched, and an invisible
(L-infinity 0.1) backdoor trigger defeated by training at epsilon 0.1."""

import copy

import pytest
import torch
from torch import nn

from poisonlab.defend import get
from poisonlab.defend.pgd_at import pgd
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import runs_on_the_run_device, checker_world


def tiny():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    return model


def test_one_pgd_step_by_hand():
    # x = (0.5, 0.5): logits (0, 0), p = (1/2, 1/2); grad_x CE(y=0) = W^T (p - e_0) = W^T (-1/2, 1/2) = (-1, 1)
    model, x, y = tiny(), torch.tensor([[0.5, 0.5]]), torch.tensor([0])
    assert torch.allclose(pgd(model, x, y, epsilon=0.1, alpha=0.03, steps=1), torch.tensor([[0.47, 0.53]]))
    assert torch.allclose(pgd(model, x, y, epsilon=0.05, alpha=0.2, steps=1), torch.tensor([[0.45, 0.55]]))  # ball
    edge = torch.tensor([[0.02, 0.99]])
    assert torch.allclose(pgd(model, edge, y, epsilon=0.1, alpha=0.1, steps=1), torch.tensor([[0.0, 1.0]]))  # [0, 1]
    start = pgd(model, x, y, epsilon=0.1, alpha=0.01, steps=3, g=torch.Generator().manual_seed(0))
    assert (start - x).abs().max() <= 0.1 + 1e-6
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_bad_params_and_the_callers_modules():
    for bad in ({"epsilon": 0.0}, {"alpha": -1.0}, {"steps": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("pgd_at", **bad)
    w = checker_world()
    shared = w.build()
    before = copy.deepcopy(shared.state_dict())
    out = get("pgd_at", steps=1).defend(data=w.poisoned.subset(torch.arange(64)), build=lambda: shared,
                                        train_cfg=w.cfg.model_copy(update={"epochs": 1}))
    assert out.model is not shared and all(torch.equal(before[k], v) for k, v in shared.state_dict().items())


def test_adversarial_training_defeats_a_small_norm_trigger():
    """A model robust on every training point's 0.1-ball cannot be switched by a trigger of L-inf size 0.1."""
    w = checker_world()
    out = get("pgd_at", epsilon=0.1, alpha=0.05, steps=2).defend(data=w.poisoned, build=w.build, train_cfg=w.cfg)
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.9 and asr < 0.1
    assert acc >= w.plain[0] - 0.05


def test_every_draw_is_made_on_the_cpu_and_moved():
    assert runs_on_the_run_device("pgd_at", steps=2)["steps"] == 2
