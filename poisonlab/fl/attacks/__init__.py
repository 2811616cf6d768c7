"""Update attacks: each rewrites only the malicious rows of the (k, d) update matrix.

Build one with ``get(name, **params)`` (e.g. ``get("scale", gamma=10)``); the result is a
pure function ``attack(updates, malicious, ctx) -> updates'`` (see poisonlab.fl.types.UpdateAttack)
that returns a new tensor and never modifies its input. ``ctx.omniscient`` says whether the
attacker may read the honest rows; when it is False the attack estimates the benign statistics
from the malicious rows themselves (the attackers' own honestly trained updates).
"""

from __future__ import annotations

from poisonlab.registry import Registry

ATTACKS = Registry("attack")


def get(name: str, **params):
    """Build the update attack registered under name with params (ConfigError on a wrong name or parameter)."""
    return ATTACKS.get(name, **params)


# Importing the modules registers their attacks.
from poisonlab.fl.attacks import alie, ipm, minmax, replacement, simple, sybil  # noqa: E402,F401

__all__ = ["ATTACKS", "get"]
