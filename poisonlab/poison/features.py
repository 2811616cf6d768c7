"""Feature poisoning: bounded noise on a fraction (or count) of samples, labels unchanged.

An availability attack on features (cf. Biggio & Roli 2018, "Wild patterns"). Noise is
L-infinity bounded by eps: uniform U[-eps, eps] or Gaussian N(0, (eps/2)^2) clipped to
[-eps, eps]; images (and [0, 1]-scaled tabular data) are then clamped to [lo, hi].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator


def bounded_noise(shape: tuple[int, ...], eps: float, kind: str, g: torch.Generator) -> torch.Tensor:
    """Noise of shape with every entry in [-eps, eps]: 'uniform' or clipped 'gaussian' (sigma eps/2)."""
    if kind == "uniform":
        return (torch.rand(shape, generator=g) * 2 - 1) * eps
    if kind == "gaussian":
        return (torch.randn(shape, generator=g) * eps / 2).clamp(-eps, eps)
    raise ConfigError(f"noise kind '{kind}' is not known; accepted: gaussian, uniform")


@POISONS.register("feature_noise", reference="Biggio & Roli 2018 (bounded feature perturbation)")
@dataclass(frozen=True)
class FeatureNoise(Poison):
    """Add L-inf-bounded noise (eps) to a fraction or count of samples; clamp to [lo, hi] (None: no clamp)."""

    fraction: float | None = None
    count: int | None = None
    eps: float = 0.3
    kind: str = "uniform"
    lo: float | None = 0.0
    hi: float | None = 1.0
    name = "feature_noise"

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """The dataset with noise on the chosen rows; mask marks them."""
        check_range("eps", self.eps, 0.0)
        index = choose(torch.arange(len(data)), self.fraction, self.count,
                       generator(seed, "feature_noise", "choose"), "samples to perturb")
        noise = bounded_noise((len(index), *data.input_shape), self.eps, self.kind, generator(seed, "feature_noise", "noise"))
        x = data.x.clone()
        x[index] = x[index] + noise
        if self.lo is not None or self.hi is not None:
            x[index] = x[index].clamp(self.lo, self.hi)
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "feature_noise", "count": len(index), "eps": self.eps, "kind": self.kind}
        return Poisoned(data.replace(x=x, name=f"{data.name}+feature_noise"), mask, info)
