"""POISONS: every data-poisoning attack by name, one uniform interface.

``POISONS.get(name, **params)`` returns an object with ``apply(dataset, seed) -> Poisoned``;
backdoor-style poisons also have ``target`` and ``triggered(test_set, seed) -> Dataset``
(triggered inputs with their TRUE labels). Clean-label attacks need a trained model first:
they have ``requires_model = True`` and ``bind(model)`` returns a ready copy.
"""

from __future__ import annotations

from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.poison.backdoor import Backdoor
from poisonlab.poison.clean_label import FeatureCollision, HiddenTrigger
from poisonlab.poison.external import ExternalPhotos
from poisonlab.poison.features import FeatureNoise
from poisonlab.poison.labels import LabelFlip
from poisonlab.poison.semantic import SemanticBackdoor
from poisonlab.registry import Registry

POISONS = Registry("poison")

POISONS.register("label_flip", reference="Biggio et al. 2012; Tolpegin et al. 2020 (targeted source->target)")(LabelFlip)
POISONS.register("feature_noise", reference="Biggio & Roli 2018 (bounded feature perturbation)")(FeatureNoise)
POISONS.register("backdoor", reference="Gu et al. 2017, BadNets (dirty-label trigger backdoor)")(Backdoor)
POISONS.register("semantic_backdoor", reference="Bagdasaryan et al. 2020 (semantic backdoor, natural subpopulation)")(
    SemanticBackdoor)
POISONS.register("external", reference="Shafahi et al. 2018 (web-scraped poison photos labelled as a chosen class)")(
    ExternalPhotos)


def make_poison(spec: Any) -> Any:
    """A poison from an object with apply(), or a {name, params} dict as in the YAML config."""
    load_federated_poisons()
    if hasattr(spec, "apply"):
        return spec
    if isinstance(spec, dict) and "name" in spec:
        extra = set(spec) - {"name", "params"}
        if extra:
            raise ConfigError(f"poison spec has unknown keys {sorted(extra)}; accepted: name, params")
        return POISONS.get(spec["name"], **(spec.get("params") or {}))
    raise ConfigError(f"poison={spec!r} is not valid; accepted: {{name: ..., params: {{...}}}} with name in"
                      f" {', '.join(POISONS.names())}")

POISONS.register("feature_collision", reference="Shafahi et al. 2018, Poison Frogs! (clean-label feature collision)")(
    FeatureCollision)
POISONS.register("hidden_trigger", reference="Saha et al. 2020, Hidden Trigger Backdoor Attacks (AAAI)")(HiddenTrigger)


def load_federated_poisons() -> None:
    """Register the poisons and triggers that live in poisonlab.fl (DBA, edge-case photos, tabular features).

    Imported on first use rather than at import time, since those modules import poisonlab.poison.
    """
    import poisonlab.fl.dba  # noqa: F401
    import poisonlab.fl.edge_case  # noqa: F401
