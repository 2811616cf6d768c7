"""A synthetic tabular classification source: Gaussian class clusters, seeded.

The engine benchmark's setting (32 features, 10 classes) as a Dataset: each class c has a centre
mu_c ~ N(0, I_f) * separation; a sample of class c is mu_c + N(0, I_f) * noise. Classes overlap
enough that a small MLP does not reach 100%. Features are float32, unscaled (mean ~0, std ~1.5).
"""

from __future__ import annotations

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.data.registry import SOURCES
from poisonlab.errors import check_range
from poisonlab.rng import generator


@SOURCES.register("synthetic", reference="Gaussian class clusters, the FL tutorial's data (poisonlab.data.synthetic)")
def synthetic(num_samples: int = 12000, num_features: int = 32, num_classes: int = 10,
              separation: float = 1.0, noise: float = 1.0, seed: int = 0) -> Dataset:
    """num_samples rows of num_features Gaussian features, balanced over num_classes clusters."""
    check_range("num_samples", num_samples, 1)
    check_range("num_features", num_features, 1)
    check_range("num_classes", num_classes, 2)
    check_range("noise", noise, 0.0, low_open=True)
    g = generator(seed, "synthetic", num_features, num_classes)
    centres = torch.randn(num_classes, num_features, generator=g) * separation
    y = torch.arange(num_samples) % num_classes
    y = y[torch.randperm(num_samples, generator=g)]
    x = centres[y] + torch.randn(num_samples, num_features, generator=g) * noise
    return Dataset(x, y, tuple(str(c) for c in range(num_classes)), "synthetic",
                   meta={"separation": separation, "noise": noise, "seed": seed})


def client_sizes(num_clients: int, low: int = 50, high: int = 150, seed: int = 0) -> list[int]:
    """Per-client sample counts uniform in [low, high], seeded (the engine benchmark's 50-150)."""
    check_range("low", low, 1)
    check_range("high", high, low)
    g = generator(seed, "synthetic", "sizes", num_clients)
    return torch.randint(low, high + 1, (num_clients,), generator=g).tolist()
