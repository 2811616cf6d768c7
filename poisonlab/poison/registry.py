"""POISONS and TRIGGERS: the poison package's registries, by name.

A leaf module: it imports none of the poisons or triggers. Each one registers itself with a
decorator in its own file (``@POISONS.register("backdoor", reference=...)``), and
``poisonlab/poison/__init__.py`` imports every such file, so both registries are complete as soon
as anything in ``poisonlab.poison`` is imported.

``POISONS.get(name, **params)`` returns a :class:`poisonlab.poison.base.Poison`: ``apply(dataset,
seed) -> Poisoned``, plus ``target``, ``triggered``, ``flip_pairs``, ``requires_model``/``bind``
with defaults for the poisons that do not use them.
"""

from __future__ import annotations

from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.poison.base import Poison
from poisonlab.registry import Registry

POISONS = Registry("poison")
TRIGGERS = Registry("trigger")


def make_poison(spec: Any) -> Poison:
    """A poison from a Poison object, or a {name, params} dict as in the YAML config."""
    if isinstance(spec, Poison):
        return spec
    if isinstance(spec, dict) and "name" in spec:
        extra = set(spec) - {"name", "params"}
        if extra:
            raise ConfigError(f"poison spec has unknown keys {sorted(extra)}; accepted: name, params")
        return POISONS.get(spec["name"], **(spec.get("params") or {}))
    raise ConfigError(f"poison={spec!r} is not valid; accepted: a poisonlab.poison.base.Poison, or"
                      f" {{name: ..., params: {{...}}}} with name in {', '.join(POISONS.names())}")
