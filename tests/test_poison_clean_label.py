"""Clean-label attacks on a tiny trained model: the optimisation objective and constraints of each paper."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.poison import POISONS
from poisonlab.poison.clean_label import _features
from poisonlab.training import TrainConfig, train


@pytest.fixture(scope="module")
def setup(digits):
    train_set, test_set = digits.split(0.2, seed=0)
    model = make_model("mlp", train_set.input_shape, 10, seed=0, hidden=[32])
    train(model, train_set, TrainConfig(epochs=3, batch_size=128, lr=0.2), seed=0)
    return train_set, test_set, model


def test_feature_collision_moves_poisons_onto_target(setup):
    train_set, test_set, model = setup
    ti = int(torch.nonzero(test_set.y == 6)[0])
    fc = POISONS.get("feature_collision", base_class=2, target_index=ti, count=3, steps=100, lr=0.01).bind(model, test_set)
    p = fc.apply(train_set, seed=0)
    assert p.count == 3 and torch.all(train_set.y[p.mask] == 2)
    assert torch.equal(p.data.y, train_set.y)  # clean label: labels unchanged
    f = _features(model)
    target = test_set.x[ti : ti + 1]
    before = (f(train_set.x[p.mask]) - f(target)).norm(dim=1)
    after = (f(p.data.x[p.mask]) - f(target)).norm(dim=1)
    assert torch.all(after < 0.5 * before)
    assert float(p.data.x.min()) >= 0 and float(p.data.x.max()) <= 1
    assert torch.equal(p.data.x[~p.mask], train_set.x[~p.mask])
    trig = fc.triggered(test_set)
    assert len(trig) == 1 and int(trig.y[0]) == 6 and fc.target == 2


def test_feature_collision_proximity_term(setup):
    """A large beta pins the poison to the (watermarked) base: the backward step's fixed point."""
    train_set, test_set, model = setup
    fc = POISONS.get("feature_collision", base_class=2, target_index=0, count=2, steps=50, lr=0.01, beta=1e6,
                     watermark=0.0).bind(model, test_set)
    p = fc.apply(train_set, seed=0)
    assert torch.allclose(p.data.x[p.mask], train_set.x[p.mask], atol=1e-3)


def test_hidden_trigger_stays_in_eps_ball_and_keeps_labels(setup):
    train_set, test_set, model = setup
    ht = POISONS.get("hidden_trigger", source=3, target=8, count=10, eps=0.1, steps=20, batch=30,
                     trigger={"name": "patch", "params": {"size": 2, "position": "random"}}).bind(model)
    p = ht.apply(train_set, seed=0)
    assert p.count == 10 and torch.all(train_set.y[p.mask] == 8) and torch.equal(p.data.y, train_set.y)
    delta = (p.data.x - train_set.x)[p.mask]
    assert float(delta.abs().max()) <= 0.1 + 1e-6 and float(delta.abs().max()) > 0.01
    f = _features(model)
    src = ht.trigger(train_set.x[train_set.y == 3], torch.Generator().manual_seed(1))
    d_before = torch.cdist(f(train_set.x[p.mask]), f(src)).min(1).values.mean()
    d_after = torch.cdist(f(p.data.x[p.mask]), f(src)).min(1).values.mean()
    assert d_after < d_before
    trig = ht.triggered(test_set)
    assert torch.all(trig.y == 3) and not torch.equal(trig.x, test_set.x[test_set.y == 3])


def test_clean_label_needs_model(setup):
    train_set, _, _ = setup
    with pytest.raises(ConfigError, match="bind"):
        POISONS.get("hidden_trigger", source=3, target=8, count=2).apply(train_set)
