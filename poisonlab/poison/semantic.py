"""Semantic backdoor: no stamped trigger; a natural subpopulation is relabelled to the target.

Bagdasaryan et al. 2020 ("How to backdoor federated learning": cars with racing stripes,
green cars -> bird). Here the subpopulation is the members of a source class with a visual
property in its top (or bottom) quantile within that class: ``ink`` (mean pixel intensity:
thick strokes), ``slant`` (shear mu11 / mu02 of the ink's second central moments: italic digits)
or ``width`` (horizontal extent of the ink). A fraction of the training members are relabelled
target; the attack success rate is measured on the held-out (test) members, which keep their
true label. The quantile threshold is computed within the source class of whichever set is
given, so train and test subpopulations are defined the same way.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator


def ink(x: torch.Tensor) -> torch.Tensor:
    """Mean intensity of each image (n,)."""
    return x.flatten(1).mean(1)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ink mass m, centroid (r, c) and grid broadcasting helpers for (n, c, h, w) images."""
    g = x.mean(1)  # (n, h, w)
    h, w = g.shape[-2:]
    rows = torch.arange(h, dtype=g.dtype).reshape(1, h, 1)
    cols = torch.arange(w, dtype=g.dtype).reshape(1, 1, w)
    m = g.sum((1, 2)).clamp_min(1e-8)
    r = (g * rows).sum((1, 2)) / m
    c = (g * cols).sum((1, 2)) / m
    return g, m, r, c


def slant(x: torch.Tensor) -> torch.Tensor:
    """Shear of the ink: mu11 / mu02 (central moments; row-column covariance over row variance), (n,)."""
    g, m, r, c = _moments(x)
    h, w = g.shape[-2:]
    dr = torch.arange(h, dtype=g.dtype).reshape(1, h, 1) - r.reshape(-1, 1, 1)
    dc = torch.arange(w, dtype=g.dtype).reshape(1, 1, w) - c.reshape(-1, 1, 1)
    mu11 = (g * dr * dc).sum((1, 2)) / m
    mu02 = (g * dr * dr).sum((1, 2)) / m
    return mu11 / mu02.clamp_min(1e-8)


def width(x: torch.Tensor) -> torch.Tensor:
    """Horizontal extent of the ink: columns whose maximum exceeds 0.5, counted (n,)."""
    return (x.amax(dim=(1, 2)) > 0.5).sum(1).to(x.dtype)


PROPERTIES = {"ink": ink, "slant": slant, "width": width}


@POISONS.register("semantic_backdoor", reference="Bagdasaryan et al. 2020 (semantic backdoor, natural subpopulation)")
@dataclass(frozen=True)
class SemanticBackdoor(Poison):
    """Relabel `fraction` of the source-class members whose property is in the top (or bottom) quantile."""

    source: int
    target: int
    property: str = "ink"
    quantile: float = 0.7
    above: bool = True
    fraction: float = 1.0
    name = "semantic_backdoor"

    def __post_init__(self) -> None:
        if self.property not in PROPERTIES:
            raise ConfigError(f"property '{self.property}' is not known; accepted: {', '.join(PROPERTIES)}")
        check_range("quantile", self.quantile, 0.0, 1.0, low_open=True, high_open=True)
        if self.source == self.target:
            raise ConfigError(f"source and target are both {self.source}; accepted: two different classes")

    @builtins.property  # the field `property` shadows the builtin in this class body
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, target): the subpopulation's class and the class it is relabelled as."""
        return ((int(self.source), int(self.target)),)

    def members(self, data: Dataset) -> torch.Tensor:
        """Positions of the subpopulation in data: source-class samples past the property's quantile."""
        for name, v in (("source", self.source), ("target", self.target)):
            if not 0 <= int(v) < data.num_classes:
                raise ConfigError(f"{name}={v} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        idx = torch.nonzero(data.y == self.source).flatten()
        if len(idx) == 0:
            return idx
        value = PROPERTIES[self.property](data.x[idx])
        cut = torch.quantile(value.double(), self.quantile).to(value.dtype)
        return idx[value >= cut] if self.above else idx[value <= cut]

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Relabel the chosen members of the subpopulation as target."""
        index = choose(self.members(data), self.fraction, None, generator(seed, "semantic", "choose"), "members")
        y = data.y.clone()
        y[index] = self.target
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "semantic_backdoor", "count": len(index), "source": self.source, "target": self.target,
                "property": self.property, "quantile": self.quantile, "above": self.above}
        return Poisoned(data.replace(y=y, name=f"{data.name}+semantic"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """The held-out members of the subpopulation, with their TRUE labels (the source class)."""
        return test_set.subset(self.members(test_set)).replace(name=f"{test_set.name}[semantic members]")
