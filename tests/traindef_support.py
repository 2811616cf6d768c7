"""Small backdoored worlds for the training-stage defense tests (tests/test_defend_<name>.py), built once per
session: a fresh-model factory, the poisoned training set, the clean test set, a trigger, and the scores of
a model trained without defense (which the defended model must beat).

- ``checker_world``: the 8x8 "bars" images of test_detect_common with an invisible trigger, a +-0.1
  checkerboard added to the whole image (L-infinity size 0.1, like the blended / SIG backdoors), on 10% of
  the training rows, relabelled 0.
- ``digits_patch_world``: scikit-learn digits with a 2x2 white patch in the bottom-right corner on 3% of the
  training rows (BadNets; ``digits_patch_world(0.1)``: on 10%), relabelled 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from poisonlab.data import load
from poisonlab.data.dataset import Dataset
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, predict, train
from test_detect_common import bars, one_thread

TARGET = 0
CHECKER = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2) * 2.0 - 1.0


def checker(x: torch.Tensor) -> torch.Tensor:
    return (x + 0.1 * CHECKER).clamp(0, 1)


def corner(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[..., 6:, 6:] = 1.0
    return x


@dataclass(frozen=True)
class World:
    poisoned: Dataset
    mask: torch.Tensor
    test: Dataset
    trigger: Callable[[torch.Tensor], torch.Tensor]
    build: Callable[[], torch.nn.Module]
    cfg: TrainConfig
    plain: tuple[float, float]  # (clean accuracy, ASR) of the undefended model

    def scores(self, model) -> tuple[float, float]:
        """(clean accuracy, ASR on the triggered non-target test rows) of model."""
        keep = self.test.y != TARGET
        acc = float((predict(model, self.test.x) == self.test.y).float().mean())
        asr = float((predict(model, self.trigger(self.test.x[keep])) == TARGET).float().mean())
        return acc, asr


def _poison(data: Dataset, rate: float, trigger, seed: int) -> tuple[Dataset, torch.Tensor]:
    candidates = torch.nonzero(data.y != TARGET).flatten()
    pick = candidates[torch.randperm(len(candidates), generator=generator(seed, "poison"))[: int(rate * len(data))]]
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[pick] = True
    x, y = data.x.clone(), data.y.clone()
    x[mask] = trigger(x[mask])
    y[mask] = TARGET
    return data.replace(x=x, y=y), mask


def _world(train_set, test_set, rate, trigger, classes, cfg) -> World:
    poisoned, mask = _poison(train_set, rate, trigger, 3)

    def build():
        return make_model("cnn", (1, 8, 8), classes, seed=0, channels=(8, 16), hidden=32)

    with one_thread():
        plain = build()
        train(plain, poisoned, cfg, seed=0)
    world = World(poisoned, mask, test_set, trigger, build, cfg, (0.0, 0.0))
    return World(poisoned, mask, test_set, trigger, build, cfg, world.scores(plain))


@lru_cache(maxsize=None)
def checker_world() -> World:
    return _world(bars(800, 1), bars(400, 2), 0.1, checker, 4, TrainConfig(epochs=8, batch_size=32, lr=0.05))


@lru_cache(maxsize=None)
def digits_patch_world(rate: float = 0.03) -> World:
    train_set, test_set = load("digits").split(0.3, seed=0)
    return _world(train_set, test_set, rate, corner, 10, TrainConfig(epochs=8, batch_size=32, lr=0.05))


def runs_on_the_run_device(name: str, **params) -> dict:
    """defend() of the training defense `name` on a tiny tabular set with torch's default device set to "meta":
    a tensor made without the run's device fails loudly (tests/test_device_discipline.py). Its details."""
    from poisonlab.data.dataset import Dataset
    from poisonlab.defend import get

    g = torch.Generator().manual_seed(0)
    data = Dataset(torch.rand(6, 3, generator=g), torch.tensor([0, 1, 0, 1, 0, 1]), ("a", "b"))
    torch.set_default_device("meta")
    try:
        out = get(name, **params).defend(data=data, build=lambda: torch.nn.Sequential(torch.nn.Linear(3, 2, device="cpu")),
                                         train_cfg=TrainConfig(epochs=2, batch_size=2), seed=0)
    finally:
        torch.set_default_device(None)
    assert all(p.device.type == "cpu" for p in out.model.parameters())
    return out.details


def runs_on_meta_default(name: str, **params) -> dict:
    """runs_on_the_run_device for defenses that need images: 8 random 1x4x4 images (rows 0-3 clean, 4-7 the
    clean set), a cpu cnn-sized model, torch's default device "meta". Its details."""
    from poisonlab.data.dataset import Dataset
    from poisonlab.defend import get

    g = torch.Generator().manual_seed(0)
    data = Dataset(torch.rand(8, 1, 4, 4, generator=g), torch.tensor([0, 1] * 4), ("a", "b"))

    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4, device="cpu"), torch.nn.ReLU(),
                                   torch.nn.Linear(4, 2, device="cpu"))

    torch.set_default_device("meta")
    try:
        out = get(name, **params).defend(data=data, clean=data, build=build,
                                         train_cfg=TrainConfig(epochs=2, batch_size=4), seed=0)
    finally:
        torch.set_default_device(None)
    assert all(p.device.type == "cpu" for p in out.model.parameters())
    return out.details
