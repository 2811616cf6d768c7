"""Centered clipping (Karimireddy, He and Jaggi 2021), centred on the previous round's aggregate.

v_0 = previous aggregate (zeros in the first round); for l = 1..L:
v_l = v_{l-1} + sum_i w_i (x_i - v_{l-1}) min(1, tau / ||x_i - v_{l-1}||) / sum_i w_i.
Stateful (the centre), with state_dict() / load_state_dict() for checkpoints.
selected: rows not clipped in the last iteration; scores: ||x_i - v_{L-1}|| / tau.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators import register
from poisonlab.fl.aggregators.base import (CHUNK_BYTES, check_int, check_positive, check_updates, empty,
                                           normalized, row_distances)
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Karimireddy, He and Jaggi 2021, Learning from History for Byzantine Robust Optimization"
             " (ICML)")


class CenteredClipping:
    """Stateful centred clipping; the centre is the last aggregate it returned."""

    def __init__(self, tau: float, iterations: int, chunk_bytes: int = CHUNK_BYTES):
        self.tau, self.iterations, self.chunk_bytes = tau, iterations, chunk_bytes
        self.center = torch.zeros(0)

    def __repr__(self) -> str:
        return f"centered_clipping(tau={self.tau}, iterations={self.iterations})"

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        check_updates(updates, weights)
        w = normalized(weights)
        if updates.shape[0] == 0 or not bool(w.sum() > 0):
            return empty(updates)
        d = updates.shape[1]
        v = self.center.to(updates.dtype) if self.center.numel() == d else torch.zeros(d, dtype=updates.dtype)
        for _ in range(self.iterations):
            dist = row_distances(updates, v, self.chunk_bytes)
            c = w * (self.tau / dist.clamp_min(1e-30)).clamp_max(1.0)
            v = v + c.to(updates.dtype) @ updates - c.sum().to(updates.dtype) * v
        self.center = v.clone()
        return Aggregate(v, dist <= self.tau, (dist / self.tau).float(), {"clipped": int((dist > self.tau).sum())})

    def state_dict(self) -> dict:
        """{'center': the previous aggregate (empty before the first round)}."""
        return {"center": self.center.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the centre."""
        self.center = state["center"].clone()


@register("centered_clipping", reference=REFERENCE)
def centered_clipping(tau: float = 1.0, iterations: int = 1, chunk_bytes: int = CHUNK_BYTES) -> CenteredClipping:
    """Centered clipping: clip each update's distance to the previous aggregate at tau, L iterations."""
    return CenteredClipping(check_positive("centered_clipping", "tau", tau),
                            check_int("centered_clipping", "iterations", iterations, low=1), int(chunk_bytes))
