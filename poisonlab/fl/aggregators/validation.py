"""Validation-based rejection: drop updates whose model does worse on the server's held-out set.

Reads ctx.extras["validate"] (callable: (m, d) candidate updates -> (m,) accuracies of
global + server_lr * update) and ctx.extras["base_accuracy"] (the current global model's).
Row i is kept iff acc_i >= base_accuracy - epsilon; the kept rows are passed on to the next step
of a chain, or alone averaged (client weights). In the spirit of RONI (Nelson et al. 2008) and
the error-rate based rejection of Fang et al. 2020.
selected: kept rows; scores: base_accuracy - acc_i (the accuracy drop; higher = more suspicious).
"""

from __future__ import annotations

import torch

from poisonlab.errors import DataError
from poisonlab.fl.aggregators.base import Rule, check_positive, require_extra
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Nelson et al. 2008, Exploiting Machine Learning to Subvert Your Spam Filter (RONI);"
             " Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust Federated Learning (ERR)")


def accuracy_drop(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    """base_accuracy - acc_i for each row, from the server's validate callable (ConfigError without one)."""
    validate = require_extra(ctx, "validate", "validation", "a callable scoring candidate updates on the"
                             " server's held-out set")
    base = float(require_extra(ctx, "base_accuracy", "validation", "the global model's held-out accuracy"))
    acc = torch.as_tensor(validate(updates), dtype=torch.float64, device=updates.device).flatten()
    if acc.shape != (updates.shape[0],) or not bool(torch.isfinite(acc).all()):
        raise DataError(f"validation: validate() must return {updates.shape[0]} finite accuracies;"
                        f" got shape {tuple(acc.shape)}")
    return (base - acc).float()


@AGGREGATORS.register("validation", reference=REFERENCE)
def validation(epsilon: float = 0.0) -> Rule:
    """Validation-based rejection: drop updates that lower held-out accuracy by more than epsilon."""
    epsilon = check_positive("validation", "epsilon", epsilon, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        drop = accuracy_drop(updates, ctx)
        keep = drop <= epsilon
        return Aggregate(None, keep, drop, {"rejected": int((~keep).sum())}, keep=keep)

    return Rule(apply, f"validation(epsilon={epsilon})", transform=True)
