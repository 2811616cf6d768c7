"""The update-attack registry (a leaf module: each attack's module registers itself here, nothing is imported back)."""

from __future__ import annotations

from poisonlab.registry import Registry

ATTACKS = Registry("attack")
