"""Where each kind of component is registered, for ``poisonlab list`` and the config schema.

Each registry sits in a module whose package imports every member of that kind, so importing the
module named here gives the complete registry.
"""

from __future__ import annotations

import importlib

from poisonlab.errors import unknown_name
from poisonlab.registry import Registry

# kind -> (module, registry attribute)
KINDS: dict[str, tuple[str, str]] = {
    "datasets": ("poisonlab.data.registry", "SOURCES"),
    "models": ("poisonlab.models", "MODELS"),
    "triggers": ("poisonlab.poison.registry", "TRIGGERS"),
    "poisons": ("poisonlab.poison.registry", "POISONS"),
    "partitions": ("poisonlab.fl.partition", "PARTITIONS"),
    "attacks": ("poisonlab.fl.attacks", "ATTACKS"),
    "aggregators": ("poisonlab.fl.aggregators", "AGGREGATORS"),
    "detectors": ("poisonlab.detect", "DETECTORS"),
}


def registry(kind: str) -> Registry:
    """The registry for a kind ('datasets', 'models', 'attacks', ...)."""
    if kind not in KINDS:
        raise unknown_name("kind", kind, KINDS)
    module, attr = KINDS[kind]
    return getattr(importlib.import_module(module), attr)
