"""The base of backdoors whose trigger is a trained network: learn the trigger from the data, then BadNets-style.

Input-aware dynamic (Nguyen and Tran 2020), LIRA (Doan et al. 2021) and SSBA (Li et al. 2021) stamp each
image with a trigger computed by a network trained for the attack. Their poison is the dirty-label
backdoor of poison/backdoor.py (rate of the data, targets all-to-one / all_to_all / {source: target},
``sources``, ``per_class``) whose trigger is not given but *learned* in ``apply`` from the training data:
  1. ``learn(data, seed)`` trains the attack's networks (seeded, on the CPU) and returns a LearnedTrigger;
  2. the learned trigger is kept on the poison (like low_frequency's pattern: the trigger is a function of the
     data and seed), so ``triggered(test_set)`` stamps test inputs with the same trained network;
  3. the chosen rows are stamped by it and relabelled to their target (Backdoor.apply).
Calling ``triggered`` before ``apply`` is refused in one line (there is no trained trigger yet).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DivergedError
from poisonlab.poison.backdoor import Backdoor
from poisonlab.poison.generator_nets import run_frozen
from poisonlab.poison.result import Poisoned
from poisonlab.poison.triggers import Trigger, _batch, _unbatch


class PendingTrigger(Trigger):
    """The placeholder before apply(): stamping with it is refused in one line."""

    def __init__(self, attack: str) -> None:
        self.name = attack

    def __call__(self, x, generator=None):
        raise ConfigError(f"{self.name}'s trigger is a network trained in apply(train_set); call apply() before"
                          " triggered()")

    def to_dict(self) -> dict:
        return {"name": self.name, "params": {"trained": False}}


class LearnedTrigger(Trigger):
    """A trained trigger: stamp(x) (float32 batch -> stamped batch) run without gradients, in chunks."""

    def __init__(self, attack: str, stamp: Callable[[torch.Tensor], torch.Tensor], info: dict) -> None:
        self.name = attack
        self.stamp = stamp
        self.info = dict(info)

    def __call__(self, x, generator=None):
        xb, single = _batch(x)
        return _unbatch(run_frozen(self.stamp, xb), single)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": {"trained": True, **self.info}}


@dataclass(frozen=True)
class GeneratedBackdoor(Backdoor):
    """A Backdoor whose trigger is learned by ``learn(data, seed)`` in apply (subclasses define learn)."""

    trigger: Any = field(default=None, init=False, compare=False, repr=False)
    target: int | str | dict = 0
    rate: float | None = 0.1
    epochs: int = 2
    batch: int = 128
    lr: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", PendingTrigger(self.name))
        super().__post_init__()
        for what in ("epochs", "batch"):
            if int(getattr(self, what)) < 1:
                raise ConfigError(f"{what}={getattr(self, what)} is out of range; accepted: an int >= 1")
        if not float(self.lr) > 0:
            raise ConfigError(f"lr={self.lr} is out of range; accepted: > 0")

    @property
    def trained(self) -> bool:
        """Whether apply() has trained the trigger (triggered() needs it)."""
        return isinstance(self.trigger, LearnedTrigger)

    @abc.abstractmethod
    def learn(self, data: Dataset, seed: int) -> LearnedTrigger:
        """The attack's trigger, trained on data (seeded)."""

    def _check(self, data: Dataset) -> None:
        super()._check(data)
        if not data.is_image:
            raise ConfigError(f"{self.name} needs image data (n, c, h, w); '{data.name}' has shape {tuple(data.x.shape)}")

    def apply(self, data: Dataset, seed: int = 0, *, learn: bool = True) -> Poisoned:
        """Learn the trigger on data, keep it for triggered(), stamp the chosen rows and relabel them.

        learn=False stamps with the trigger already trained (trained on the first call): a federation's attackers
        are coordinated, so the first attacker's data trains the network and every attacker stamps with it, and
        the ASR probe stamps the test inputs with that same network (builders._ClientPoison)."""
        self._check(data)
        if learn or not self.trained:
            object.__setattr__(self, "trigger", self.learn(data, seed))
        out = super().apply(data, seed)
        if not bool(torch.isfinite(out.data.x[out.mask]).all()):
            object.__setattr__(self, "trigger", PendingTrigger(self.name))
            raise DivergedError(f"{self.name}'s trigger network diverged in training (non-finite stamps);"
                                f" accepted: a smaller lr (got lr={self.lr})")
        return Poisoned(out.data.replace(name=f"{data.name}+{self.name}"), out.mask, {**out.info, "attack": self.name})
