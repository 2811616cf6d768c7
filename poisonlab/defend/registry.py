"""The defense registry (a leaf module: members import it, it imports no member)."""

from poisonlab.registry import Registry

DEFENSES = Registry("defense")
