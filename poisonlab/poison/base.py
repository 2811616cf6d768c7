"""The Poison base: what every data poison offers, with defaults, so callers never probe with hasattr.

A poison is a frozen dataclass with ``apply(data, seed) -> Poisoned``. The base adds what callers ask
of any poison, defaulted for the plain case:

- ``target`` / ``source``: the class poisoned samples are pushed to / taken from (None: none);
- ``requires_model`` and ``bind(model, test_set=None)``: clean-label attacks need the victim model
  first; ``bind`` returns a ready copy (the base returns the poison itself);
- ``has_trigger`` and ``triggered(test_set, seed)``: backdoor-style poisons build the test inputs
  their attack success rate is measured on (TRUE labels kept); the base has no trigger;
- ``flip_pairs``: the (source, target) class pairs whose test-set flips are reported (default none);
- ``probe(test_set)``: held-out inputs to report predictions on (e.g. external test photos), or None;
- ``trains_model`` and ``train_model(model, poisoned, cfg, seed, precision)``: attacks that control the
  victim's training (blind backdoor, adversarial embedding) replace plain training of the poisoned model
  (centralized.py calls the first such poison's ``train_model`` instead of ``training.train``; concat only).

A subclass overrides only what applies. A dataclass field named ``target`` or ``source`` declared
without a default stays required (dataclasses would otherwise take this base's None as its default).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from poisonlab.errors import ConfigError

_DEFAULTED = ("target", "source")


class Poison(abc.ABC):
    """Base of every data poison; subclasses are frozen dataclasses with apply(data, seed) -> Poisoned."""

    name = "poison"
    target: Any = None
    source: Any = None
    requires_model = False
    trains_model = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        annotated = cls.__dict__.get("__annotations__", {})
        for attr in _DEFAULTED:
            if attr in annotated and attr not in cls.__dict__:
                setattr(cls, attr, dataclasses.field())  # required: do not inherit the base's None

    @abc.abstractmethod
    def apply(self, data, seed: int = 0):
        """The poisoned dataset: Poisoned(data, mask, info)."""

    @property
    def has_trigger(self) -> bool:
        """Whether triggered(test_set, seed) builds an attack-success test set (it is overridden)."""
        return type(self).triggered is not Poison.triggered

    def triggered(self, test_set, seed: int = 0):
        """The test inputs the attack success rate is measured on; this poison has none."""
        raise ConfigError(f"poison '{self.name}' has no trigger (no attack-success test set);"
                          " accepted: a backdoor-style poison (backdoor, semantic_backdoor, dba, edge_case, ...)")

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """The (source, target) class pairs this poison flips, whose test confusion counts are reported."""
        return ()

    def bind(self, model, test_set=None) -> "Poison":
        """A copy ready to apply with the victim model (clean-label attacks); the base needs none."""
        return self

    def train_model(self, model, poisoned, cfg, seed: int = 0, precision: str = "fp32") -> list[float]:
        """Train model in place on poisoned (a Poisoned) with the attacker's training; per-epoch mean losses."""
        raise ConfigError(f"poison '{self.name}' does not train the model; accepted: a poison with trains_model")

    def probe(self, test_set) -> dict | None:
        """Held-out inputs {x, files, target} whose predictions are reported, or None."""
        return None
