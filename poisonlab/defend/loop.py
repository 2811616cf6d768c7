"""The small pieces the training-style repair defenses share: seeded mini-batches and an SGD optimizer.

Each epoch's order is drawn on the CPU from ``generator(seed, purpose, epoch)`` and moved to the model's
device (the same batches on every device, as training.train does); the data is moved there once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.rng import generator


def minibatches(data: Dataset, batch_size: int, device: torch.device, seed: int, purpose: str,
                *epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) mini-batches of data on device, in the seeded order of (seed, purpose, *epoch)."""
    x, y = data.x.to(device), data.y.to(device)
    order = torch.randperm(len(data), generator=generator(seed, purpose, *epoch), device="cpu").to(device)
    for start in range(0, len(data), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def sgd(params: Sequence[torch.Tensor], lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.SGD:
    """Plain SGD with momentum over params (the optimiser every paper here uses)."""
    return torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay)
