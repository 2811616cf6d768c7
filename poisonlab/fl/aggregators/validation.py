"""Validation-based rejection: drop updates whose model does worse on the server's held-out set.

Reads ctx.extras["validate"] (callable: (m, d) candidate updates -> (m,) accuracies of
global + server_lr * update) and ctx.extras["base_accuracy"] (the current global model's).
Row i is kept iff acc_i >= base_accuracy - epsilon; the kept rows are averaged (client weights),
or passed on when used as a step in chain(...). In the spirit of RONI (Nelson et al. 2008) and
the error-rate based rejection of Fang et al. 2020.
selected: kept rows; scores: base_accuracy - acc_i (the accuracy drop; higher = more suspicious).
"""

from __future__ import annotations

import torch

from poisonlab.errors import DataError
from poisonlab.fl.aggregators import register
from poisonlab.fl.aggregators.base import (Transformed, check_positive, check_updates, empty, require_extra,
                                           weighted_mean)
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Nelson et al. 2008, Exploiting Machine Learning to Subvert Your Spam Filter (RONI);"
             " Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust Federated Learning (ERR)")


class ValidationRejection:
    """Keep rows with acc_i >= base_accuracy - epsilon."""

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def __repr__(self) -> str:
        return f"validation(epsilon={self.epsilon})"

    def _accuracy_drop(self, updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        validate = require_extra(ctx, "validate", "validation", "a callable scoring candidate updates on the"
                                 " server's held-out set")
        base = float(require_extra(ctx, "base_accuracy", "validation", "the global model's held-out accuracy"))
        acc = torch.as_tensor(validate(updates), dtype=torch.float64).flatten()
        if acc.shape != (updates.shape[0],) or not bool(torch.isfinite(acc).all()):
            raise DataError(f"validation: validate() must return {updates.shape[0]} finite accuracies;"
                            f" got shape {tuple(acc.shape)}")
        return (base - acc).float()

    def transform(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Transformed:
        """Drop the rows whose accuracy drop exceeds epsilon."""
        drop = self._accuracy_drop(updates, ctx)
        keep = drop <= self.epsilon
        return Transformed(updates, weights, keep, keep, drop, {"rejected": int((~keep).sum())})

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        check_updates(updates, weights)
        if updates.shape[0] == 0:
            return empty(updates)
        drop = self._accuracy_drop(updates, ctx)
        keep = drop <= self.epsilon
        update = weighted_mean(updates, weights * keep)
        return Aggregate(update, keep & (weights > 0), drop, {"rejected": int((~keep).sum())})


@register("validation", reference=REFERENCE)
def validation(epsilon: float = 0.0) -> ValidationRejection:
    """Validation-based rejection: drop updates that lower held-out accuracy by more than epsilon."""
    return ValidationRejection(check_positive("validation", "epsilon", epsilon, allow_zero=True))
