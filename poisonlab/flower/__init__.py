"""Flower integration (extra ``poisonlab[flower]``): poisonlab's attacks and defenses on Flower.

- ``RobustStrategy`` (strategy.py): a Flower strategy aggregating with any poisonlab rule chain,
  logging which nodes it flagged, rejecting malformed replies without failing the round.
- ``client_app`` / ``server_app`` (apps.py): honest and malicious ClientApps, a ServerApp factory.
- ``arrays.py``: poisonlab flat vectors and nn.Module parameters <-> Flower ArrayRecord, validated.
- ``run_simulation`` (simulation.py): a federated experiment on Flower's simulation engine (Ray).
- ``deployment.py``: start a local SuperLink and SuperNodes (docs and tests).

Flower is imported lazily: ``import poisonlab.flower`` always works; using any of the above
without Flower installed raises ConfigError("Flower is not installed; install poisonlab[flower]").
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from poisonlab.errors import ConfigError

_MISSING = "Flower is not installed; install poisonlab[flower]"

_EXPORTS = {
    "ArraySpec": "poisonlab.flower.arrays",
    "RobustStrategy": "poisonlab.flower.strategy",
    "client_app": "poisonlab.flower.apps",
    "server_app": "poisonlab.flower.apps",
    "run_simulation": "poisonlab.flower.simulation",
}


def flower_available() -> bool:
    """True if the flwr package can be imported."""
    return importlib.util.find_spec("flwr") is not None


def require_flwr() -> Any:
    """Import and return the flwr module, or raise ConfigError telling how to install it."""
    if not flower_available():
        raise ConfigError(_MISSING)
    try:
        return importlib.import_module("flwr")
    except ImportError as err:  # installed but broken (e.g. a missing dependency)
        raise ConfigError(f"{_MISSING} (import failed: {err})") from None


def __getattr__(name: str) -> Any:
    """Lazy access to the public names; needs Flower."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'poisonlab.flower' has no attribute {name!r}")
    require_flwr()
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = ["flower_available", "require_flwr", *_EXPORTS]
