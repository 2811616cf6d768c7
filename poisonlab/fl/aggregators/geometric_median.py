"""The geometric median by the smoothed Weiszfeld algorithm (RFA, Pillutla, Kakade and Harchaoui 2022).

argmin_v sum_i w_i ||x_i - v||, iterated as v <- sum_i b_i x_i / sum_i b_i with
b_i = w_i / max(nu, ||x_i - v||), from the weighted mean, until the objective improves by
less than ftol (relative) or max_iter steps. Breakdown point 1/2.
selected: all True (every row gets a positive weight); scores: ||x_i - v||.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, empty, normalized, row_distances
from poisonlab.fl.aggregators.median import column_chunks_memory
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = "Pillutla, Kakade and Harchaoui 2022, Robust Aggregation for Federated Learning (IEEE TSP), RFA"


def weiszfeld(x: torch.Tensor, w: torch.Tensor, nu: float, max_iter: int, ftol: float,
              chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(v, distances, iterations) of the smoothed Weiszfeld iteration; w normalised weights."""
    v = w.to(x.dtype) @ x
    dist = row_distances(x, v, chunk_bytes)
    objective = float((w * dist).sum())
    steps = 0
    for steps in range(1, max_iter + 1):
        b = w / dist.clamp_min(nu)
        v = (b / b.sum()).to(x.dtype) @ x
        dist = row_distances(x, v, chunk_bytes)
        new = float((w * dist).sum())
        if abs(objective - new) <= ftol * max(new, 1e-30):
            break
        objective = new
    return v, dist, steps


@AGGREGATORS.register("geometric_median", reference=REFERENCE)
def geometric_median(nu: float = 1e-6, max_iter: int = 100, ftol: float = 1e-6,
                     chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Geometric median (RFA): smoothed Weiszfeld iterations minimising sum_i w_i ||x_i - v||."""
    nu = check_positive("geometric_median", "nu", nu)
    max_iter = check_int("geometric_median", "max_iter", max_iter, low=1)
    ftol = check_positive("geometric_median", "ftol", ftol, allow_zero=True)
    chunk_bytes = check_int("geometric_median", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        w = normalized(weights)
        if not bool(w.sum() > 0):
            return empty(updates)
        v, dist, steps = weiszfeld(updates, w, nu, max_iter, ftol, chunk_bytes)
        return Aggregate(v, weights > 0, dist.float(), {"weiszfeld_iterations": steps})

    return Rule(apply, f"geometric_median(max_iter={max_iter})",
                memory=column_chunks_memory("geometric_median", chunk_bytes))
