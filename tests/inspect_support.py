"""Shared pieces of the model-inspection tests (TABOR, NEO, ABS, DeepInspect, NeuronInspect): a backdoored and
a clean cnn on scikit-learn digits.

``digits_pair()``: the digits world of tests/defend_support.py (1,400 train / 397 test, 10% of the training
rows stamped with a 2x2 white corner patch and relabelled 0, a cnn(8, 16; 32) trained 10 epochs) plus the
same cnn trained on the clean rows only, built once per session (about 10 s on one thread).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from defend_support import CLEAN_SIZE, digits_world
from poisonlab.data import load
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, train
from test_detect_common import one_thread, poison


@lru_cache(maxsize=None)
def digits_pair():
    """(defender clean set, test set, backdoored cnn, clean cnn); both models frozen."""
    clean, test_set, bad = digits_world()
    with one_thread():
        d = load("digits")
        perm = torch.randperm(len(d), generator=generator(0, "digits-split"))
        _, mask = poison(d.subset(perm[:1400]), 0.1, 3)
        good = make_model("cnn", (1, 8, 8), 10, seed=0, channels=(8, 16), hidden=32)
        train(good, d.subset(perm[:1400]).subset(~mask), TrainConfig(epochs=10, batch_size=32, lr=0.05), seed=0)
    good.requires_grad_(False)
    assert len(clean) == CLEAN_SIZE
    return clean, test_set, bad, good
