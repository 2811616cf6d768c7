"""A backdoored batch-norm model on the constructed ``bars`` images of test_detect_common (8x8, four classes,
a 2x2 white patch relabels 10% of the training rows to class 0), for the repair2 defense tests (BNP, EP, MCR,
NPD, ...). Built once per session, on one thread, in a few seconds."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from poisonlab.models import build_seeded
from poisonlab.training import TrainConfig, predict, train
from test_detect_common import TARGET, bars, one_thread, poison, stamp


def bn_cnn(input_shape=(1, 8, 8), num_classes=4, width: int = 32) -> nn.Sequential:
    """conv3x3 BN ReLU maxpool2 -> conv3x3 BN ReLU -> global average pool -> linear: a tiny batch-norm CNN."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


@lru_cache(maxsize=None)
def bn_world():
    """(poisoned train set, poison mask, clean test set, backdoored bn_cnn (frozen), defender's clean set)."""
    with one_thread():
        train_set, test_set = bars(800, 1), bars(400, 2)
        poisoned, mask = poison(train_set, 0.1, 3)
        model = build_seeded(bn_cnn, (1, 8, 8), 4, seed=0)
        train(model, poisoned, TrainConfig(epochs=6, batch_size=32, lr=0.05), seed=0)
        model.requires_grad_(False)
        clean = bars(100, 5)
    return poisoned, mask, test_set, model, clean


def asr(model, test_set) -> float:
    """Share of the non-target test rows, stamped, that the model sends to the target."""
    keep = test_set.y != TARGET
    return float((predict(model, stamp(test_set.x[keep])) == TARGET).float().mean())


def accuracy(model, data) -> float:
    return float((predict(model, data.x) == data.y).float().mean())


def same_state(a: dict, model: nn.Module) -> bool:
    """Whether model's state_dict equals a (a deep copy taken before)."""
    return all(torch.equal(a[k], v) for k, v in model.state_dict().items())


@lru_cache(maxsize=None)
def digits_world(model_name: str = "bn_cnn"):
    """(poisoned train set (1,200 digits, 10% stamped and relabelled 0), mask, clean test set (497 digits),
    backdoored model (frozen), defender's clean set (the first 90 clean training rows, 7.5%)).
    model_name: "bn_cnn" (batch norm) or "cnn" (poisonlab's, channels 8/16, hidden 32)."""
    from poisonlab.data import load
    from poisonlab.models import make_model

    with one_thread():
        data = load("digits")
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        train_set, test_set = data.subset(order[:1300]), data.subset(order[1300:])
        poisoned, mask = poison(train_set, 0.1, 3)
        if model_name == "bn_cnn":
            model = build_seeded(bn_cnn, (1, 8, 8), 10, seed=0)
        else:
            model = make_model("cnn", (1, 8, 8), 10, seed=0, channels=(8, 16), hidden=32)
        train(model, poisoned, TrainConfig(epochs=10, batch_size=32, lr=0.05, momentum=0.9), seed=0)
        model.requires_grad_(False)
        clean = poisoned.subset(torch.nonzero(~mask).flatten()[:90])
    return poisoned, mask, test_set, model, clean
