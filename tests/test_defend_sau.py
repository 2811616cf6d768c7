"""SAU (Wei et al., NeurIPS 2023): the shared-adversarial loss by hand, the shared perturbation raising it within
its radius, the caller's model untouched, bad parameters refused, and a digits backdoor unlearned."""

import copy
import math

import pytest
import torch
from torch import nn

from poisonlab.defend import get
from poisonlab.defend.sau import shared_loss, shared_pgd
from poisonlab.errors import ConfigError
from repair2_world import accuracy, asr, digits_world, same_state
from test_detect_common import single_thread  # noqa: F401 (autouse)


def test_shared_loss_by_hand():
    p = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    q = torch.log(torch.tensor([[0.2, 0.1, 0.7]]))
    # y = 0: min over the models per class = (0.2, 0.1, 0.2); the largest wrong one 0.2 -> -log(0.8)
    assert shared_loss(p, q, torch.tensor([0])).item() == pytest.approx(-math.log(0.8), rel=1e-5)
    # y = 2: wrong classes 0, 1 -> min (0.2, 0.1) -> 0.2
    assert shared_loss(p, q, torch.tensor([2])).item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_shared_perturbation_stays_in_its_ball_and_raises_the_loss():
    g = torch.Generator().manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    with torch.no_grad():
        for p in list(a.parameters()) + list(b.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    x, y = torch.rand(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    delta = shared_pgd(a, b, x, y, eps=0.1, steps=4, low=0.0, high=1.0)
    assert delta.abs().max() <= 0.1 + 1e-7 and ((x + delta) >= 0).all() and ((x + delta) <= 1).all()
    assert shared_loss(a(x + delta), b(x + delta), y) > shared_loss(a(x), b(x), y)


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="eps=-0.1"):
        get("sau", eps=-0.1)
    with pytest.raises(ConfigError, match="w_share=-1"):
        get("sau", w_share=-1)


def test_unlearning_shared_examples_removes_a_digits_backdoor():
    _, _, test_set, model, clean = digits_world("cnn")
    before = copy.deepcopy(model.state_dict())
    out = get("sau").defend(model=model, clean=clean)
    assert asr(model, test_set) > 0.95 and asr(out.model, test_set) < 0.3
    assert accuracy(out.model, test_set) > accuracy(model, test_set) - 0.15
    assert same_state(before, model)
