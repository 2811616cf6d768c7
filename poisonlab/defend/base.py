"""What every backdoor defense is (the Defense protocol) and what it returns (Defended).

A defense is a class registered in ``defend.registry.DEFENSES``; its constructor takes keyword-only
parameters and stores them (validated, one-line ConfigErrors); ``stage`` says where in a model's life
it acts, ``requires`` names the ``defend`` keywords it cannot do without, and one keyword-only

    defend(*, model=None, data=None, clean=None, build=None, train_cfg=None, seed=0) -> Defended

returns the model to deploy: always a NEW module (the caller's model is never changed), optionally
with a ``reject`` function for defenses that refuse inputs at inference. The stages follow
BackdoorBench's grouping (Wu et al., NeurIPS 2022 Datasets & Benchmarks):

| stage      | acts on                                   | gets                                       |
|------------|-------------------------------------------|--------------------------------------------|
| repair     | a trained, suspect model (post-training)  | model, clean (a small clean set), build    |
| training   | the training run (in-training defenses)   | data (the poisoned set), build, train_cfg  |
| inference  | inputs at test time (purify or reject)    | model, clean                               |

``clean`` is the small clean set the defender holds (BackdoorBench: 5% of the clean training data);
``build()`` returns a fresh, seeded, untrained model of the experiment's architecture on its device;
``train_cfg`` is the experiment's TrainConfig (epochs, lr, batch size), for defenses that train.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from poisonlab.defend.registry import DEFENSES
from poisonlab.errors import ConfigError

STAGES = {
    "repair": "repairs a trained (suspect) model with a small clean set",
    "training": "trains a model on the (possibly poisoned) data so that a backdoor does not take",
    "inference": "guards a model at inference: purifies inputs or rejects them",
}
INPUTS = {
    "model": "the trained model to defend",
    "data": "the training data (possibly poisoned)",
    "clean": "a small clean set the defender holds",
    "build": "a factory for a fresh model of the same architecture",
    "train_cfg": "the training settings (TrainConfig)",
}


@dataclass(frozen=True)
class Defended:
    """A defense's result: the model to deploy (a new module), an optional reject(x) -> bool (n,) mask of
    inputs it refuses at inference (a refused input counts as not classified: wrong for clean accuracy and
    robust accuracy, not a success for the attack), and a small dict of what it did."""

    model: nn.Module
    reject: Callable[[torch.Tensor], torch.Tensor] | None = None
    details: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"Defended.model must be an nn.Module; got {type(self.model).__name__}")


@runtime_checkable
class Defense(Protocol):
    """A defense: ``stage`` (a key of STAGES), ``requires`` (keys of INPUTS) and one keyword-only ``defend``;
    keywords it does not use are ignored."""

    stage: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]

    def defend(self, *, model: nn.Module | None = None, data: Any = None, clean: Any = None,
               build: Callable[[], nn.Module] | None = None, train_cfg: Any = None, seed: int = 0) -> Defended:
        """The defended model (a new module; the caller's model is never changed)."""
        ...


def defense_name(defense: Any) -> str:
    """The registered name of a defense instance (its class name when it is not registered)."""
    return next((e.name for e in DEFENSES.entries() if e.factory is type(defense)), type(defense).__name__)


def require(defense: Any, **given: Any) -> None:
    """ConfigError naming the defense and the first of its required inputs that is None."""
    for key in defense.requires:
        if given.get(key) is None:
            raise ConfigError(f"defense '{defense_name(defense)}' needs {INPUTS[key]}; pass defend({key}=...)")


def trainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of model with gradients enabled (the caller's model, frozen or not, is never changed)."""
    return copy.deepcopy(model).requires_grad_(True)
