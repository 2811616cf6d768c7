"""Update attacks: each rewrites only the malicious rows of the (k, d) update matrix.

Build one with ``get(name, **params)`` (e.g. ``get("scale", gamma=10)``); the result is a
pure function ``attack(updates, malicious, ctx) -> updates'`` (see poisonlab.fl.types.UpdateAttack)
that returns a new tensor and never modifies its input. ``ctx.omniscient`` says whether the
attacker may read the honest rows; when it is False the attack estimates the benign statistics
from the malicious rows themselves (the attackers' own honestly trained updates).
"""

from __future__ import annotations

from poisonlab.fl.attacks.alie import alie
from poisonlab.fl.attacks.alt_min import alt_min
from poisonlab.fl.attacks.clustering_adaptive import clustering_adaptive
from poisonlab.fl.attacks.fang import fang_krum, fang_trim
from poisonlab.fl.attacks.ipm import ipm
from poisonlab.fl.attacks.mimic import mimic
from poisonlab.fl.attacks.minmax import min_max, min_sum
from poisonlab.fl.attacks.mpaf import mpaf
from poisonlab.fl.attacks.neurotoxin import neurotoxin
from poisonlab.fl.attacks.optimal import alie_opt, ipm_opt
from poisonlab.fl.attacks.permutation import permutation
from poisonlab.fl.attacks.probes import inf, zero
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.replacement import constrain_and_scale, model_replacement
from poisonlab.fl.attacks.signguard_adaptive import signguard_adaptive
from poisonlab.fl.attacks.simple import gaussian, scale, sign_flip
from poisonlab.fl.attacks.stale import stale
from poisonlab.fl.attacks.sybil import sybil
from poisonlab.fl.attacks.tailored import agr_tailored
from poisonlab.fl.attacks.threedfed import threedfed


def get(name: str, **params):
    """Build the update attack registered under name with params (ConfigError on a wrong name or parameter)."""
    return ATTACKS.get(name, **params)


__all__ = ["ATTACKS", "agr_tailored", "alie", "alie_opt", "alt_min", "clustering_adaptive", "constrain_and_scale",
           "fang_krum", "fang_trim", "gaussian", "get", "inf", "ipm", "ipm_opt", "mimic", "min_max", "min_sum",
           "model_replacement", "mpaf", "neurotoxin", "permutation", "scale", "sign_flip", "signguard_adaptive",
           "stale", "sybil", "threedfed", "zero"]
