"""Norm clipping and the "weak DP" defense (clip, then Gaussian noise).

norm_clip(B): x_i <- x_i * min(1, B / ||x_i||), then the weighted mean; alone it bounds one
client's leverage on the mean (||delta|| <= 2B/K), chained it feeds any rule.
selected: rows not clipped (||x_i|| <= B); scores: ||x_i|| / B.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import Rule, check_positive, normalized, row_norms
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

CLIP_REFERENCE = ("Sun et al. 2019, Can You Really Backdoor Federated Learning? (norm bounding);"
                  " McMahan et al. 2018, Learning Differentially Private Recurrent Language Models")


def clip_factors(updates: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(min(1, B / ||x_i||), ||x_i||) for each row."""
    norms = row_norms(updates)
    return (bound / norms.clamp_min(1e-30)).clamp_max(1.0), norms


@AGGREGATORS.register("norm_clip", reference=CLIP_REFERENCE)
def norm_clip(bound: float = 1.0) -> Rule:
    """Clip each update to Euclidean norm B, then average (or feed the next rule in a chain).

    Passes on the rows scaled by min(1, B / ||x_i||) (Aggregate.scale: a clipped copy is made only
    when a next step reads the rows); alone, the weighted mean of the clipped rows.
    """
    bound = check_positive("norm_clip", "bound", bound)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        factors, norms = clip_factors(updates, bound)
        return Aggregate(None, norms <= bound, norms / bound, {"clipped": int((norms > bound).sum())},
                         scale=factors)

    return Rule(apply, f"norm_clip({bound})", transform=True)


@AGGREGATORS.register("dp_gaussian", reference="Sun et al. 2019, Can You Really Backdoor Federated Learning?"
                                               " (weak DP); McMahan et al. 2018 (DP-FedAvg Gaussian mechanism)")
def dp_gaussian(bound: float = 1.0, sigma: float = 0.01) -> Rule:
    """Weak DP: clip each update to norm B, average, add Gaussian noise of std sigma * B / n (uniform weights).

    update = sum_i w_i min(1, B / ||x_i||) x_i / sum_i w_i + N(0, (sigma * B * max_i w_i / sum_i w_i)^2)
    per coordinate (generator derived from ctx.seed and ctx.round).
    """
    bound = check_positive("dp_gaussian", "bound", bound)
    sigma = check_positive("dp_gaussian", "sigma", sigma, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        factors, norms = clip_factors(updates, bound)
        w = normalized(weights)
        std = sigma * bound * float(w.max())
        noise = torch.randn(updates.shape[1], generator=generator(ctx.seed, "dp_gaussian", ctx.round), device="cpu")
        update = (w * factors).to(updates.dtype) @ updates + std * noise.to(updates)  # drawn on the CPU, moved
        return Aggregate(update, norms <= bound, norms / bound,
                         {"clipped": int((norms > bound).sum()), "noise_std": std})

    return Rule(apply, f"dp_gaussian(bound={bound}, sigma={sigma})")
