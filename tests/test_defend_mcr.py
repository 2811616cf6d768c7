"""MCR (Zhao et al., ICLR 2020): the Bezier point by hand, the ends of the curve, the caller's model untouched, bad
parameters refused, and a digits backdoor whose ASR falls at t = 0.4 on a curve between two backdoored models."""

import copy

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.mcr import bezier, curve_point, train_bend
from poisonlab.defend.run import apply_defense
from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.training import TrainConfig
from repair2_world import accuracy, asr, digits_world, same_state
from test_detect_common import single_thread  # noqa: F401 (autouse)


def test_bezier_point_by_hand():
    w0, theta, w1 = torch.tensor([0.0, 4.0]), torch.tensor([2.0, 0.0]), torch.tensor([4.0, 8.0])
    assert bezier(0.0, w0, theta, w1).tolist() == [0.0, 4.0]
    assert bezier(1.0, w0, theta, w1).tolist() == [4.0, 8.0]
    # t = 0.5: 0.25 w0 + 0.5 theta + 0.25 w1;  t = 0.25: 0.5625 w0 + 0.375 theta + 0.0625 w1
    assert bezier(0.5, w0, theta, w1).tolist() == [2.0, 3.0]
    assert bezier(0.25, w0, theta, w1).tolist() == pytest.approx([1.0, 2.75])


def tiny():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    clean = Dataset(torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g), classes=("a", "b"),
                    name="c")
    return model.eval(), clean


def test_the_returned_model_is_the_curve_point_and_t0_is_the_model():
    model, clean = tiny()
    before = copy.deepcopy(model.state_dict())
    defense = get("mcr", t=0.3, end="fine_tune", epochs=2, finetune_epochs=1)
    out = defense.defend(model=model, clean=clean, seed=1).model
    end = defense.end_model(model, clean, None, None, None, seed=1)
    bend = train_bend(model, end, clean, 2, defense.lr, defense.batch_size, seed=1)
    want = curve_point(dict(model.named_parameters()), bend, dict(end.named_parameters()), 0.3)
    assert all(torch.allclose(p, want[k]) for k, p in out.named_parameters())
    start = get("mcr", t=0.0, end="fine_tune", epochs=1, finetune_epochs=1).defend(model=model, clean=clean).model
    assert all(torch.equal(p, dict(model.named_parameters())[k]) for k, p in start.named_parameters())
    assert not torch.equal(start[1].running_mean, model[1].running_mean)     # statistics recomputed on clean
    assert same_state(before, model)


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="t=1.5"):
        get("mcr", t=1.5)
    with pytest.raises(ConfigError, match="end='mid'.*retrain, fine_tune"):
        get("mcr", end="mid")
    model, clean = tiny()
    with pytest.raises(ConfigError, match="needs the training data"):
        apply_defense(get("mcr"), model=model, data=None, clean=clean, build=None, train_cfg=None, seed=0)


def test_a_curve_between_two_backdoored_digit_models_loses_the_backdoor():
    poisoned, _, test_set, model, clean = digits_world("cnn")
    build = lambda: make_model("cnn", (1, 8, 8), 10, seed=0, channels=(8, 16), hidden=32)  # noqa: E731
    cfg = TrainConfig(epochs=10, batch_size=32, lr=0.05, momentum=0.9)
    out = get("mcr").defend(model=model, clean=clean, data=poisoned, build=build, train_cfg=cfg, seed=0).model
    assert asr(model, test_set) > 0.95 and asr(out, test_set) < 0.7
    assert accuracy(out, test_set) > accuracy(model, test_set) - 0.08
