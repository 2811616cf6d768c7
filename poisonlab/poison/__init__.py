"""Data poisoning: triggers, label flipping, feature noise, backdoors (BadNets, blended, SIG, WaNet, BPP, FTrojan,
CTRL, ReFool), external, clean-label, DBA and edge-case poisons.

Use ``POISONS.get(name, **params).apply(dataset, seed)`` -> ``Poisoned(data, mask, info)``.

Registration: the registries live in the leaf module ``poison/registry.py``; every poison and
trigger registers itself with a decorator in its own file, and this package imports each of
those files below, so ``POISONS`` and ``TRIGGERS`` are complete once ``poisonlab.poison`` is imported.
A new poison is one file with ``@POISONS.register(...)`` plus its import line here.
"""

from poisonlab.poison.registry import POISONS, TRIGGERS, make_poison
from poisonlab.poison.base import Poison
from poisonlab.poison.result import Poisoned
from poisonlab.poison.triggers import (BlendTrigger, FeatureTrigger, ImageTrigger, PatchTrigger, PatternTrigger,
                                       PixelTrigger, Trigger, make_trigger)
from poisonlab.poison import (  # noqa: F401  (each registers its poisons / triggers)
    backdoor, bpp, clean_label, clean_label_backdoor, dba, edge_case, external, features, frequency, gradient_matching,
    label_consistent, labels, low_frequency, reflection, semantic, signal_triggers, trojannn, warp)
from poisonlab.poison import (  # noqa: F401,E402  (optimised and training-time backdoors)
    adversarial_embedding, blind_backdoor, bullseye_polytope, latent_backdoor)
from poisonlab.poison import input_aware, lira, poison_ink, ssba  # noqa: F401,E402  (generator-trained / edge backdoors)
from poisonlab.poison import poison_ink_network  # noqa: F401,E402  (Poison Ink with its injection network)

__all__ = ["POISONS", "TRIGGERS", "Poison", "Poisoned", "Trigger", "PixelTrigger", "PatternTrigger", "PatchTrigger",
           "ImageTrigger", "BlendTrigger", "FeatureTrigger", "make_poison", "make_trigger"]
