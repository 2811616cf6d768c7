"""Shared pieces of the repair-defense tests: two backdoored worlds with a small defender clean set, the
ASR and accuracy, and a check that the caller's model is left alone.

- ``world()``: the 8x8 bars world of tests/test_detect_common.py (a 2x2 corner patch, target 0, a cnn).
- ``digits_world()``: scikit-learn digits (1,400 train / 397 test), 10% of the training rows stamped with
  the same 2x2 white corner patch and relabelled 0, a cnn(8, 16; 32) trained 10 epochs (about 5 s, once).
"""

from __future__ import annotations

import copy

import torch

from functools import lru_cache

from poisonlab.data import load
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, predict, train
from test_detect_common import TARGET, backdoor_world, one_thread, poison, stamp

CLEAN_SIZE = 200


def world():
    """(defender clean set of CLEAN_SIZE untouched rows, test set, backdoored cnn)."""
    poisoned, mask, test_set, bad, _ = backdoor_world()
    return poisoned.subset(~mask).subset(torch.arange(CLEAN_SIZE)), test_set, bad


@lru_cache(maxsize=None)
def digits_world():
    """(defender clean set of CLEAN_SIZE untouched rows, test set, backdoored cnn), built once per session."""
    with one_thread():
        d = load("digits")
        perm = torch.randperm(len(d), generator=generator(0, "digits-split"))
        train_set, test_set = d.subset(perm[:1400]), d.subset(perm[1400:])
        poisoned, mask = poison(train_set, 0.1, 3)
        bad = make_model("cnn", (1, 8, 8), 10, seed=0, channels=(8, 16), hidden=32)
        train(bad, poisoned, TrainConfig(epochs=10, batch_size=32, lr=0.05), seed=0)
    bad.requires_grad_(False)
    return poisoned.subset(~mask).subset(torch.arange(CLEAN_SIZE)), test_set, bad


def asr(model, test_set) -> float:
    keep = test_set.y != TARGET
    return float((predict(model, stamp(test_set.x[keep])) == TARGET).float().mean())


def accuracy(model, test_set) -> float:
    return float((predict(model, test_set.x) == test_set.y).float().mean())


def unchanged_after(defense, model, **kw):
    """Run defense.defend(model=model, **kw); assert model's state is bit-identical after; return the result."""
    before = copy.deepcopy(model.state_dict())
    out = defense.defend(model=model, **kw)
    assert out.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return out
