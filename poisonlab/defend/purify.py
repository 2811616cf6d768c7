"""Input purification: the deployed model as ``Purified(purifier, model)``, x -> model(purifier(x)).

The inference-stage defenses that reform inputs (MagNet's autoencoder, JPEG re-compression, bit-depth squeezing)
return this wrapper, a new module around a deep copy of the caller's model (so nothing done to the deployed model
reaches the caller's)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class Purified(nn.Module):
    """model(purifier(x)): every input purified before the original model sees it."""

    def __init__(self, purifier: nn.Module, model: nn.Module):
        super().__init__()
        self.purifier = purifier
        self.model = copy.deepcopy(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.purifier(x))
