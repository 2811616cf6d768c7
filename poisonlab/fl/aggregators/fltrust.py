"""FLTrust (Cao, Fang, Liu and Gong 2021): trust bootstrapped from the server's own update.

g0 = ctx.extras["server_update"] (the server's update on its small root dataset this round);
TS_i = ReLU(cos(x_i, g0)); x_i' = x_i * ||g0|| / ||x_i||; update = sum_i TS_i x_i' / sum_i TS_i
(zero if every TS_i = 0). Client weights are ignored, as in the paper.
selected: TS_i > 0; scores: 1 - TS_i (higher = more suspicious).
"""

from __future__ import annotations

import torch

from poisonlab.errors import DataError
from poisonlab.fl.aggregators.base import Rule, require_extra, row_norms
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Cao, Fang, Liu and Gong 2021, FLTrust: Byzantine-robust Federated Learning via Trust"
             " Bootstrapping (NDSS)")


@AGGREGATORS.register("fltrust", reference=REFERENCE)
def fltrust() -> Rule:
    """FLTrust: weight each update by ReLU(cosine to the server's root-data update), rescaled to its norm."""

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        g0 = require_extra(ctx, "server_update", "fltrust", "the server's update g0 on its root dataset")
        g0 = torch.as_tensor(g0, dtype=updates.dtype, device=updates.device).flatten()
        if g0.shape != (updates.shape[1],) or not bool(torch.isfinite(g0).all()):
            raise DataError(f"fltrust: server_update must be a finite ({updates.shape[1]},) vector;"
                            f" got shape {tuple(g0.shape)}")
        norms, g0_norm = row_norms(updates), torch.linalg.vector_norm(g0)
        cos = (updates @ g0) / (norms * g0_norm).clamp_min(1e-30)
        trust = cos.clamp_min(0)
        total = trust.sum()
        if not bool(total > 0):
            return Aggregate(torch.zeros_like(g0), torch.zeros_like(trust, dtype=torch.bool), 1 - trust,
                             {"trust": trust.tolist()})
        coef = trust * g0_norm / norms.clamp_min(1e-30) / total
        return Aggregate(coef @ updates, trust > 0, 1 - trust, {"trust": trust.tolist()})

    return Rule(apply, "fltrust()")
