"""Label flipping: random (each chosen label to a uniformly random OTHER class) or targeted (source -> target).

Biggio et al. 2012 / Xiao et al. 2012 (label-flip poisoning); the targeted form (e.g. every
chosen 7 labelled 1) is the integrity attack of Tolpegin et al. 2020 (FL label flipping).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator


def flip_labels(y: torch.Tensor, index: torch.Tensor, num_classes: int, target: int | None,
                g: torch.Generator) -> torch.Tensor:
    """A copy of y with y[index] set to target, or (target None) to (y + U{1..C-1}) mod C: a different class."""
    out = y.clone()
    if target is not None:
        out[index] = target
    else:
        shift = torch.randint(1, num_classes, (len(index),), generator=g)
        out[index] = (y[index] + shift) % num_classes
    return out


@POISONS.register("label_flip", reference="Biggio et al. 2012; Tolpegin et al. 2020 (targeted source->target)")
@dataclass(frozen=True)
class LabelFlip(Poison):
    """Flip a fraction or a count of labels.

    source=None, target=None: random flips over the whole dataset (each to another class).
    source=s, target=t: targeted, chosen among class-s samples (fraction of class s), relabelled t.
    source=None, target=t: all-to-one, chosen among samples not of class t.
    source=s, target=None: chosen among class s, each to a random other class.
    """

    fraction: float | None = None
    count: int | None = None
    source: int | None = None
    target: int | None = None
    name = "label_flip"

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, target) when the flip is targeted from one class to another, else none."""
        if self.source is None or self.target is None:
            return ()
        return ((int(self.source), int(self.target)),)

    def _check(self, data: Dataset) -> None:
        for name, v in (("source", self.source), ("target", self.target)):
            if v is not None and not 0 <= int(v) < data.num_classes:
                raise ConfigError(f"{name}={v} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        if self.source is not None and self.source == self.target:
            raise ConfigError(f"source and target are both {self.source}; accepted: two different classes")

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """The dataset with the chosen labels flipped; mask marks the flipped rows."""
        self._check(data)
        if self.source is not None:
            pool = torch.nonzero(data.y == self.source).flatten()
        elif self.target is not None:
            pool = torch.nonzero(data.y != self.target).flatten()
        else:
            pool = torch.arange(len(data))
        frac, count = self.fraction, self.count
        if frac is None and count is None:
            frac = 1.0 if self.source is not None else None
        index = choose(pool, frac, count, generator(seed, "label_flip", "choose"), "samples to flip")
        y = flip_labels(data.y, index, data.num_classes, self.target, generator(seed, "label_flip", "labels"))
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "label_flip", "count": len(index), "source": self.source, "target": self.target}
        return Poisoned(data.replace(y=y, name=f"{data.name}+label_flip"), mask, info)
