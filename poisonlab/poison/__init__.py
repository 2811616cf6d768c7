"""Data poisoning: triggers, label flipping, feature noise, backdoors, external and clean-label poisons.

Use ``POISONS.get(name, **params).apply(dataset, seed)`` -> ``Poisoned(data, mask, info)``.
"""

from poisonlab.poison.registry import POISONS, make_poison
from poisonlab.poison.result import Poisoned
from poisonlab.poison.triggers import (TRIGGERS, BlendTrigger, ImageTrigger, PatchTrigger, PatternTrigger,
                                       PixelTrigger, Trigger, make_trigger)

__all__ = ["POISONS", "TRIGGERS", "Poisoned", "Trigger", "PixelTrigger", "PatternTrigger", "PatchTrigger",
           "ImageTrigger", "BlendTrigger", "make_poison", "make_trigger"]
