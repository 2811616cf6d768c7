"""Clean-label trigger backdoor: the trigger is stamped on target-class training images, labels unchanged.

The attacker cannot relabel (a curator would see a mislabelled image), so it poisons images that
already belong to the target class: the model learns "trigger => target" because the trigger only ever
appears with that label. This is how SIG is used in its paper (Barni et al. 2019: a fraction alpha of
the target class carries the signal) and the trigger-stamping half of label-consistent attacks (Turner,
Tsipras and Madry 2019, who first make those images hard to learn; not done here). ReFool (Liu et al.
2020) poisons the target class the same way with reflection triggers.

rate is the share of the TARGET CLASS that is poisoned (the paper's alpha), or count images; at test time
every input is stamped and keeps its true label, so the attack success rate counts inputs of other classes.
``test_trigger`` (optional) stamps the test inputs with another trigger: Barni et al. amplify the signal
at test time (a larger delta than in training), which this expresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator


@POISONS.register("clean_label_backdoor", reference="Barni et al. 2019 (SIG); Turner, Tsipras and Madry 2019 "
                                                    "(label-consistent); Liu et al. 2020 (ReFool): trigger on target-class images")
@dataclass(frozen=True)
class CleanLabelBackdoor(Poison):
    """Stamp trigger on rate (share of the target class) or count target-class training images; labels kept."""

    trigger: Trigger | dict | str
    target: int = 0
    rate: float | None = None
    count: int | None = None
    test_trigger: Trigger | dict | str | None = None
    name = "clean_label_backdoor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        if self.test_trigger is not None:
            object.__setattr__(self, "test_trigger", make_trigger(self.test_trigger))
        if (self.rate is None) == (self.count is None):
            raise ConfigError(f"clean_label_backdoor needs exactly one of rate (share of the target class) and count;"
                              f" got rate={self.rate}, count={self.count}")

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Stamp the trigger on the chosen target-class images; every label stays as it was."""
        if not 0 <= int(self.target) < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        pool = torch.nonzero(data.y == int(self.target)).flatten()
        index = choose(pool, self.rate, self.count, generator(seed, "clean-label-backdoor", "choose"),
                       f"images of the target class {self.target}")
        x = data.x.clone()
        x[index] = self.trigger(data.x[index], generator(seed, "clean-label-backdoor", "stamp"))
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "clean_label_backdoor", "count": len(index), "target": int(self.target),
                "trigger": self.trigger.to_dict()}
        return Poisoned(data.replace(x=x, name=f"{data.name}+clean-label-backdoor"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input stamped with the (test) trigger; TRUE labels kept (ASR excludes true == target)."""
        trigger = self.test_trigger if self.test_trigger is not None else self.trigger
        x = trigger(test_set.x, generator(seed, "clean-label-backdoor", "test-stamp"))
        return test_set.replace(x=x, name=f"{test_set.name}+trigger")
