"""Dirty-label backdoor (BadNets, Gu et al. 2017): stamp a trigger on chosen samples, relabel them the target.

target: one class (all-to-one), "all_to_all" (class y -> (y + 1) mod C) or {source: target} per
source class (poison/targets.py). The poison rate (or count) is a share of the WHOLE training set,
poisons chosen among samples of attacked classes (not the target; one of ``sources`` when given);
with ``per_class: true`` the rate is instead the share of EACH attacked class, drawn class by class
(ART's all-to-all example: every class shifted by one, a third of each class poisoned, is
``{target: all_to_all, rate: 0.33, per_class: true}``).
``triggered(test_set)`` stamps every test input and KEEPS the true labels, so the attack
success rate (metrics.attack_success_rate) counts only inputs whose class is attacked.
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
from poisonlab.poison.targets import check_classes, normalise_target, target_map
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator


@POISONS.register("backdoor", reference="Gu et al. 2017, BadNets (dirty-label trigger backdoor; all-to-one and all-to-all)")
@dataclass(frozen=True)
class Backdoor(Poison):
    """Stamp trigger on rate (of the dataset, or of each attacked class) or count samples; relabel to their target."""

    trigger: Trigger | dict | str
    target: int | str | dict = 0
    rate: float | None = None
    count: int | None = None
    sources: Sequence[int] | None = None
    per_class: bool = False
    name = "backdoor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        target = normalise_target(self.target)
        object.__setattr__(self, "target", target if not isinstance(target, tuple) else {s: t for s, t in target})
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(int(s) for s in self.sources))
        if self.rate is None and self.count is None:
            raise ConfigError("backdoor needs rate (fraction of the training set) or count; got neither")
        if self.per_class and self.rate is None:
            raise ConfigError("per_class: true needs rate (the share of each attacked class); got count only")
        if self.rate is not None and not 0.0 <= float(self.rate) <= 1.0:
            raise ConfigError(f"rate={self.rate} is out of range; accepted: [0, 1]")

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, target) pairs the test flips are counted for: given sources, or a per-source mapping."""
        if isinstance(self.target, dict):
            return tuple(sorted((int(s), int(t)) for s, t in self.target.items()
                                if self.sources is None or s in self.sources))
        if isinstance(self.target, int):
            return tuple((int(s), int(self.target)) for s in self.sources or ())
        return ()

    def target_map(self, num_classes: int) -> tuple[int, ...]:
        """map[c] = the label class c's poisons get, -1 where class c is not attacked (poison/targets.py)."""
        return target_map(self.target, num_classes, self.sources)

    def _check(self, data: Dataset) -> None:
        check_classes(self.target, data.num_classes, self.sources, data.name)

    def eligible(self, data: Dataset) -> torch.Tensor:
        """Positions of samples that may be poisoned (of an attacked class)."""
        tmap = torch.tensor(self.target_map(data.num_classes), dtype=torch.long)
        return torch.nonzero(tmap[data.y.long()] >= 0).flatten()

    def _chosen(self, data: Dataset, pool: torch.Tensor, seed: int) -> torch.Tensor:
        """The poisoned positions: rate of the dataset (or count) from pool, or rate of each attacked class."""
        if not self.per_class:
            count = self.count if self.rate is None else min(int(round(float(self.rate) * len(data))), len(pool))
            return choose(pool, None, count, generator(seed, "backdoor", "choose"), "eligible samples")
        picks = []
        for c in torch.unique(data.y[pool]).tolist():  # one draw per class (at most C), not per sample
            members = pool[data.y[pool] == c]
            count = int(round(float(self.rate) * len(members)))
            picks.append(choose(members, None, count, generator(seed, "backdoor", "choose", int(c)), f"samples of class {c}"))
        return torch.sort(torch.cat(picks)).values if picks else pool[:0]

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Stamp the trigger on the chosen rows and set each one's label to its class's target."""
        self._check(data)
        index = self._chosen(data, self.eligible(data), seed)
        tmap = torch.tensor(self.target_map(data.num_classes), dtype=torch.long)
        x, y = data.x.clone(), data.y.clone()
        x[index] = self.trigger(data.x[index], generator(seed, "backdoor", "stamp"))
        y[index] = tmap[data.y[index].long()].to(y.dtype)
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        target = self.target if not isinstance(self.target, dict) else {str(s): t for s, t in self.target.items()}
        info = {"attack": "backdoor", "count": len(index), "target": target, "trigger": self.trigger.to_dict()}
        return Poisoned(data.replace(x=x, y=y, name=f"{data.name}+backdoor"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input stamped with the trigger; TRUE labels kept (ASR excludes true == target)."""
        x = self.trigger(test_set.x, generator(seed, "backdoor", "test-stamp"))
        return test_set.replace(x=x, name=f"{test_set.name}+trigger")
