"""Centralized training: bit-identical with the same seed, fine_tune leaves the original intact."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.metrics import confusion_matrix
from poisonlab.models import make_model
from poisonlab.training import TrainConfig, evaluate, fine_tune, predict, train


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def small(digits):
    return digits.split(0.2, seed=0)


def test_same_seed_gives_identical_weights(small):
    train_set = small[0].subset(list(range(600)))
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    runs = []
    for seed in (0, 0, 1):
        model = make_model("cnn", train_set.input_shape, 10, seed=seed)
        losses = train(model, train_set, cfg, seed=seed)
        runs.append((_params(model), losses))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def test_training_learns_and_evaluate_is_consistent(small):
    train_set, test_set = small
    model = make_model("mlp", train_set.input_shape, 10, seed=0)
    before = evaluate(model, test_set)
    losses = train(model, train_set, TrainConfig(epochs=3), seed=0)
    assert losses[-1] < losses[0]
    ev = evaluate(model, test_set)
    assert ev.accuracy > 0.85 and ev.accuracy > before.accuracy + 0.5 and ev.loss < before.loss
    pred = predict(model, test_set.x)
    assert ev.confusion == confusion_matrix(pred, test_set.y, 10).tolist()
    assert ev.accuracy == pytest.approx(float((pred == test_set.y).float().mean()))
    assert sum(map(sum, ev.confusion)) == len(test_set)
    assert not model.training  # left in eval mode


def test_fine_tune_returns_a_copy(small):
    train_set, _ = small
    model = make_model("mlp", train_set.input_shape, 10, seed=0)
    train(model, train_set, TrainConfig(epochs=1), seed=0)
    original = _params(model).clone()
    tuned = fine_tune(model, train_set.subset(list(range(100))), TrainConfig(epochs=2, lr=0.05), seed=0)
    assert torch.equal(_params(model), original)
    assert not torch.equal(_params(tuned), original) and tuned is not model


def test_adam_and_config_errors(small):
    train_set, _ = small
    model = make_model("logistic", train_set.input_shape, 10, seed=0)
    losses = train(model, train_set, TrainConfig(epochs=2, optimizer="adam", lr=0.01), seed=0)
    assert losses[1] < losses[0]
    with pytest.raises(ConfigError, match="optimizer 'adamw' is not known; known: adam, sgd"):
        TrainConfig(optimizer="adamw")
    with pytest.raises(ConfigError, match=r"lr=0 is out of range"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="is empty; cannot train on 0 samples"):
        train(model, train_set.subset([]), TrainConfig(epochs=1))


def test_cosine_schedule_follows_the_formula_and_is_what_the_optimizer_uses(small, monkeypatch):
    import math

    from poisonlab import training

    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, lr_schedule="cosine")
    assert training.lr_at(cfg, 0, 10) == pytest.approx(0.1)
    assert training.lr_at(cfg, 5, 10) == pytest.approx(0.05)  # half-way: (1 + cos(pi/2)) / 2
    assert training.lr_at(cfg, 9, 10) == pytest.approx(0.1 * (1 + math.cos(0.9 * math.pi)) / 2)
    assert training.lr_at(TrainConfig(lr=0.1), 9, 10) == 0.1
    seen = []
    step = torch.optim.SGD.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", record)
    train_set = small[0].subset(list(range(100)))
    model = make_model("logistic", train_set.input_shape, 10, seed=0)
    train(model, train_set, cfg, seed=0)
    total = 2 * math.ceil(100 / 16)
    assert seen == pytest.approx([training.lr_at(cfg, t, total) for t in range(total)])
    with pytest.raises(ConfigError, match="lr_schedule 'step'"):
        TrainConfig(lr_schedule="step")


def test_predict_logits_of_an_image_model_equals_its_plain_forward_and_leaves_it_unchanged():
    from poisonlab.training import IMAGE_BATCH, predict_logits

    model = make_model("cnn", (1, 12, 12), 10, seed=3)
    model.train()
    x = torch.rand(IMAGE_BATCH * 2 + 5, 1, 12, 12, generator=torch.Generator().manual_seed(0))  # 3 batches
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    got = predict_logits(model, x)
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert model.training  # mode restored
    for p, b in zip(model.parameters(), before):
        assert p.is_contiguous() and torch.equal(p, b)  # the model is not converted to channels_last
