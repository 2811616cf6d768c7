"""Backdoor defenses: repair a suspect model, train so that a backdoor does not take, or guard inputs.

Every defense is a class registered in ``DEFENSES`` (defend/registry.py) and built with
``get(name, **params)``. It follows the ``Defense`` protocol (defend/base.py): ``stage`` ("repair",
"training" or "inference"), ``requires`` and one keyword-only ``defend(*, model, data, clean, build,
train_cfg, seed) -> Defended``. ``defend.evaluate`` scores a defended model (clean accuracy, ASR,
robust accuracy, BackdoorBench's defense effectiveness rating); ``poisonlab run`` applies an
experiment's ``defend:`` section and ``poisonlab sweep`` turns them into a leaderboard.
"""

from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.base import Defended, Defense
from poisonlab.defend import (  # noqa: F401  (each member registers its defense)
    abl, anp, bnp, clp, d_br, d_st, dbd, dp_instahide, dp_sgd, ep, filter_retrain, fine_pruning, ft_sam, i_bau, input_filter,
    magnet, mcr, nab, nad, npd, pgd_at, recompression, rnp, sau, smoothing, trigger_unlearning)


def get(name: str, **params):
    """Build the defense registered under name with params (a ConfigError names bad ones)."""
    return DEFENSES.get(name, **params)


__all__ = ["DEFENSES", "Defended", "Defense", "get"]
