"""Optimisation-based poisons: Bullseye Polytope (Aghakhani et al. 2021) and the latent backdoor (Yao et al. 2019).

Checked on hand-computable linear feature maps: the bullseye objective, its decrease, the eps projection; the
latent trigger converging to the target's mean feature; and both poisons' bookkeeping on real digits.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.poison import POISONS
from poisonlab.poison.bullseye_polytope import bullseye_images, polytope_loss
from poisonlab.poison.latent_backdoor import latent_trigger
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained(digits):
    """A small mlp trained on digits (features: the input of its last nn.Linear)."""
    model = make_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(model, digits, TrainConfig(epochs=3, batch_size=64, lr=0.05, momentum=0.9), seed=0)
    return model


# ---------------------------------------------------------------- Bullseye Polytope
def test_polytope_loss_by_hand_on_a_two_poison_linear_feature_map():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]])  # phi(x) = W x on 4-pixel images
    phi = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    phi[1].weight.data = w
    p1, p2 = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.5, 1.0])
    t = torch.tensor([0.5, 1.0, 0.5, 0.0])
    # phi(p1) = (1, 0), phi(p2) = (1, -1): mean (1, -0.5); phi(t) = (1.5, 1): diff (-0.5, -1.5) -> sqrt(2.5) / sqrt(3.25)
    with torch.no_grad():
        got = polytope_loss(phi(torch.stack([p1, p2]).reshape(2, 1, 2, 2)), phi(t.reshape(1, 1, 2, 2))[0])
    assert float(got) == pytest.approx(math.sqrt(2.5) / math.sqrt(3.25))


def test_bullseye_descends_and_stays_in_the_eps_ball():
    phi = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    phi[1].weight.data = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    base = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]]).reshape(2, 1, 2, 2)
    center = phi(torch.tensor([0.5, 1.0, 0.5, 0.0]).reshape(1, 1, 2, 2))[0].detach()
    x, history = bullseye_images(phi, base, center, eps=0.3, steps=200, lr=0.04)
    assert len(history) == 201 and history[-1] < 0.7 * history[0]  # 0.877 -> 0.582: the ball binds
    assert float((x - base).abs().max()) <= 0.3 + 1e-6 and x.min() >= 0 and x.max() <= 1
    assert float(polytope_loss(phi(x), center).detach()) == pytest.approx(history[-1], rel=1e-5)
    # with a large enough ball the bullseye is reached: the mean feature IS the target's
    x, history = bullseye_images(phi, base, center, eps=1.0, steps=1500, lr=0.04)
    assert history[-1] < 1e-2


def test_bullseye_poison_on_digits(digits, trained):
    train_set, test_set = digits.split(0.3, seed=0)
    target = int(torch.nonzero(test_set.y == 1)[0])
    p = POISONS.get("bullseye_polytope", base_class=7, target_index=[target, target + 0], count=4, steps=60)
    bound = p.bind(trained, test_set)
    x0 = train_set.x.clone()
    out = bound.apply(train_set, seed=2)
    assert torch.equal(train_set.x, x0) and torch.equal(out.data.y, train_set.y)
    assert out.count == 4 and (train_set.y[out.mask] == 7).all()
    assert float((out.data.x - x0).abs().max()) <= 0.1 + 1e-6 and torch.equal(out.data.x[~out.mask], x0[~out.mask])
    assert out.info["loss_last"] < out.info["loss_first"]
    trig = bound.triggered(test_set)
    assert len(trig) == 2 and (trig.y == 1).all() and bound.target == 7 and p.requires_model
    assert torch.equal(bound.apply(train_set, seed=2).data.x, out.data.x)  # seeded


def test_bullseye_refuses_bad_values(digits, trained):
    with pytest.raises(ConfigError, match="target_index='a' is not valid"):
        POISONS.get("bullseye_polytope", base_class=1, target_index="a")
    with pytest.raises(ConfigError, match="count=0 is out of range"):
        POISONS.get("bullseye_polytope", base_class=1, count=0)
    same = int(torch.nonzero(digits.y == 3)[0])
    with pytest.raises(ConfigError, match="already of base_class 3"):
        POISONS.get("bullseye_polytope", base_class=3, target_index=same).bind(trained, digits)
    with pytest.raises(ConfigError, match="needs bind"):
        POISONS.get("bullseye_polytope", base_class=3).apply(digits)


# ---------------------------------------------------------------- Latent backdoor
def test_latent_trigger_reaches_the_target_mean_feature_on_a_linear_map():
    """phi reads the 2x2 box pixels only: the mse optimum is the pattern equal to the target mean feature."""
    box = torch.zeros(1, 4, 4, dtype=torch.bool)
    box[:, 2:, 2:] = True
    phi = nn.Sequential(nn.Flatten(), nn.Linear(16, 4, bias=False))
    pick = torch.zeros(4, 16)
    for k, pos in enumerate(torch.nonzero(box.flatten()).flatten()):
        pick[k, pos] = 1.0
    phi[1].weight.data = pick
    for p in phi.parameters():
        p.requires_grad_(False)
    center = torch.tensor([0.2, 0.4, 0.6, 0.8])
    others = torch.rand(20, 1, 4, 4, generator=generator(0, "t"))
    pattern, history = latent_trigger(phi, others, center, box, steps=400, lr=0.1, batch=8, g=generator(0, "opt"))
    assert torch.allclose(pattern[box], center, atol=1e-2) and (pattern[~box] == 0).all()
    assert history[-1] < 1e-4 < history[0]


def test_latent_backdoor_poison_on_digits(digits, trained):
    p = POISONS.get("latent_backdoor", target=2, rate=0.1, size=3, steps=30, samples=20).bind(trained)
    x0 = digits.x.clone()
    out = p.apply(digits, seed=1)
    assert torch.equal(digits.x, x0)
    assert out.count == round(0.1 * len(digits)) and (out.data.y[out.mask] == 2).all()
    assert (digits.y[out.mask] != 2).all() and torch.equal(out.data.y[~out.mask], digits.y[~out.mask])
    assert torch.equal(out.data.x[out.mask], p.stamp(x0[out.mask]))
    assert out.info["feature_mse_last"] < out.info["feature_mse_first"]
    pattern, box = p.pattern
    assert int(box.sum()) == 9 and (pattern[~box] == 0).all()
    assert torch.equal(p.triggered(digits).x, p.stamp(digits.x)) and p.has_trigger


def test_latent_backdoor_refuses_bad_values(digits):
    with pytest.raises(ConfigError, match="samples=0 is out of range"):
        POISONS.get("latent_backdoor", samples=0)
    with pytest.raises(ConfigError, match="call bind\\(model\\) first"):
        POISONS.get("latent_backdoor").apply(digits)
    with pytest.raises(ConfigError, match="target=10 is not a class"):
        POISONS.get("latent_backdoor", target=10).apply(digits)
