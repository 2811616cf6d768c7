"""Centered clipping (Karimireddy, He and Jaggi 2021), centred on the previous round's aggregate.

v_0 = previous aggregate (zeros in the first round); for l = 1..L:
v_l = v_{l-1} + sum_i w_i (x_i - v_{l-1}) min(1, tau / ||x_i - v_{l-1}||) / sum_i w_i.
State: {'center': v_L} (the aggregate it returned; absent before the first round).
selected: rows not clipped in the last iteration; scores: ||x_i - v_{L-1}|| / tau.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, empty, normalized, row_distances
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Karimireddy, He and Jaggi 2021, Learning from History for Byzantine Robust Optimization"
             " (ICML)")


@AGGREGATORS.register("centered_clipping", reference=REFERENCE)
def centered_clipping(tau: float = 1.0, iterations: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Centered clipping: clip each update's distance to the previous aggregate at tau, L iterations."""
    tau = check_positive("centered_clipping", "tau", tau)
    iterations = check_int("centered_clipping", "iterations", iterations, low=1)
    chunk_bytes = check_int("centered_clipping", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        w = normalized(weights)
        if not bool(w.sum() > 0):
            return empty(updates, state=ctx.state)
        d = updates.shape[1]
        center = (ctx.state or {}).get("center")
        v = center.to(updates.dtype) if center is not None and center.numel() == d else \
            torch.zeros(d, dtype=updates.dtype, device=updates.device)
        for _ in range(iterations):
            dist = row_distances(updates, v, chunk_bytes)
            c = w * (tau / dist.clamp_min(1e-30)).clamp_max(1.0)
            v = v + c.to(updates.dtype) @ updates - c.sum().to(updates.dtype) * v
        return Aggregate(v, dist <= tau, (dist / tau).float(), {"clipped": int((dist > tau).sum())},
                         state={"center": v.clone()})

    return Rule(apply, f"centered_clipping(tau={tau}, iterations={iterations})")
