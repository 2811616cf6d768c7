"""Dirty-label backdoor (BadNets, Gu et al. 2017): stamp a trigger on chosen samples, relabel them the target.

The poison rate (or count) is a share of the WHOLE training set; poisons are chosen among
samples whose class is not the target (and, when ``sources`` is given, is one of the sources).
``triggered(test_set)`` stamps every test input and KEEPS the true labels, so the attack
success rate (metrics.attack_success_rate) excludes inputs whose true class is the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator


@POISONS.register("backdoor", reference="Gu et al. 2017, BadNets (dirty-label trigger backdoor)")
@dataclass(frozen=True)
class Backdoor(Poison):
    """Stamp trigger on rate (fraction of the dataset) or count samples of sources (default: all but target)."""

    trigger: Trigger | dict | str
    target: int = 0
    rate: float | None = None
    count: int | None = None
    sources: Sequence[int] | None = None
    name = "backdoor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(int(s) for s in self.sources))
        if self.rate is None and self.count is None:
            raise ConfigError("backdoor needs rate (fraction of the training set) or count; got neither")

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(s, target) for each of the given sources; none when every non-target class is a source."""
        return tuple((int(s), int(self.target)) for s in self.sources or ())

    def _check(self, data: Dataset) -> None:
        for c in (self.target, *(self.sources or ())):
            if not 0 <= int(c) < data.num_classes:
                raise ConfigError(f"class {c} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")

    def eligible(self, data: Dataset) -> torch.Tensor:
        """Positions of samples that may be poisoned (not the target; in sources when given)."""
        ok = data.y != self.target
        if self.sources is not None:
            ok &= torch.isin(data.y, torch.tensor(self.sources))
        return torch.nonzero(ok).flatten()

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Stamp the trigger on the chosen rows and set their label to target."""
        self._check(data)
        pool = self.eligible(data)
        count = self.count
        if self.rate is not None:
            count = min(int(round(float(self.rate) * len(data))), len(pool))
            if not 0.0 <= float(self.rate) <= 1.0:
                raise ConfigError(f"rate={self.rate} is out of range; accepted: [0, 1]")
        index = choose(pool, None, count, generator(seed, "backdoor", "choose"), "eligible samples")
        x, y = data.x.clone(), data.y.clone()
        x[index] = self.trigger(data.x[index], generator(seed, "backdoor", "stamp"))
        y[index] = self.target
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "backdoor", "count": len(index), "target": self.target, "trigger": self.trigger.to_dict()}
        return Poisoned(data.replace(x=x, y=y, name=f"{data.name}+backdoor"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input stamped with the trigger; TRUE labels kept (ASR excludes true == target)."""
        x = self.trigger(test_set.x, generator(seed, "backdoor", "test-stamp"))
        return test_set.replace(x=x, name=f"{test_set.name}+trigger")
