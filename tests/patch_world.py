"""A 16x16 backdoor world for the input detectors that localise a trigger (SentiNet) or probe it (TeCo, Cognitive
Distillation, BEATRIX): the 8x8 world of test_detect_common is too coarse for a conv net's last feature map
(4x4 on 8x8 images) to locate a 2x2 patch.

Class k is a bright two-row bar in rows 4k, 4k+1 (some columns dropped at random) on 1x16x16 noise; the backdoor
stamps a 4x4 white patch in the bottom-right corner on 10% of the training set (non-target samples), relabeled 0.
A small cnn (channels 8, 16: an 8x8 last conv map) trained on it for 8 epochs learns both (test accuracy and
ASR 1.0 measured with the white patch), in about 1.5 s of one CPU thread.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, train

TARGET = 0


def bars16(n: int, seed: int, classes: int = 4) -> Dataset:
    """n noisy 1x16x16 images; class k has a bright bar in rows 4k and 4k+1."""
    g = generator(seed, "bars16")
    y = torch.randint(classes, (n,), generator=g)
    x = 0.15 * torch.rand(n, 1, 16, 16, generator=g)
    keep = (torch.rand(n, 16, generator=g) > 0.25).float()
    for r in (0, 1):
        x[torch.arange(n), 0, 4 * y + r, :] = 0.6 + 0.4 * keep
    return Dataset(x.clamp(0, 1), y, tuple(str(i) for i in range(classes)), "bars16")


TRIGGERS = {"white": torch.ones(4, 4), "checker": (torch.arange(4).view(-1, 1) + torch.arange(4)) % 2 * 1.0}


def stamp16(x: torch.Tensor, trigger: str = "white") -> torch.Tensor:
    """A copy of x with a 4x4 patch in the bottom-right corner: white, or a 0/1 checkerboard (a high-frequency
    trigger that blur, pixelation and JPEG destroy while noise, contrast and brightness keep it)."""
    x = x.clone()
    x[..., 12:, 12:] = TRIGGERS[trigger]
    return x


@lru_cache(maxsize=None)
def patch_world(trigger: str = "white"):
    """(poisoned train set, poison mask, clean test set, backdoored cnn), built once per session and trigger on
    one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_set, test_set = bars16(800, 1), bars16(400, 2)
        candidates = torch.nonzero(train_set.y != TARGET).flatten()
        pick = candidates[torch.randperm(len(candidates), generator=generator(3, "bars16-poison"))[:80]]
        mask = torch.zeros(len(train_set), dtype=torch.bool)
        mask[pick] = True
        x, y = train_set.x.clone(), train_set.y.clone()
        x[mask], y[mask] = stamp16(x[mask], trigger), TARGET
        poisoned = train_set.replace(x=x, y=y)
        bad = make_model("cnn", (1, 16, 16), 4, seed=0, channels=(8, 16), hidden=32)
        train(bad, poisoned, TrainConfig(epochs=8, batch_size=32, lr=0.05), seed=0)
        return poisoned, mask, test_set, bad.requires_grad_(False)
    finally:
        torch.set_num_threads(before)


def triggered_inputs(test_set: Dataset, start: int = 200, trigger: str = "white") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, truth): test_set[start:] followed by stamped copies of those not of the target class."""
    held = test_set.subset(torch.arange(start, len(test_set)))
    keep = held.y != TARGET
    x = torch.cat([held.x, stamp16(held.x[keep], trigger)])
    truth = torch.cat([torch.zeros(len(held), dtype=torch.bool), torch.ones(int(keep.sum()), dtype=torch.bool)])
    return x, truth
