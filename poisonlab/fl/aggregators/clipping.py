"""Norm clipping and the "weak DP" defense (clip, then Gaussian noise).

norm_clip(B): x_i <- x_i * min(1, B / ||x_i||), then the weighted mean; alone it bounds one
client's leverage on the mean (||delta|| <= 2B/K), chained it feeds any rule.
selected: rows not clipped (||x_i|| <= B); scores: ||x_i|| / B.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators import register
from poisonlab.fl.aggregators.base import (Transformed, check_positive, check_updates, normalized,
                                           row_norms)
from poisonlab.fl.types import Aggregate, RoundContext

CLIP_REFERENCE = ("Sun et al. 2019, Can You Really Backdoor Federated Learning? (norm bounding);"
                  " McMahan et al. 2018, Learning Differentially Private Recurrent Language Models")


def clip_factors(updates: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(min(1, B / ||x_i||), ||x_i||) for each row."""
    norms = row_norms(updates)
    return (bound / norms.clamp_min(1e-30)).clamp_max(1.0), norms


class NormClip:
    """Clip every row to norm B; as a rule, the weighted mean of the clipped rows."""

    def __init__(self, bound: float):
        self.bound = bound

    def __repr__(self) -> str:
        return f"norm_clip({self.bound})"

    def transform(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Transformed:
        """The clipped rows (a new tensor), flags on the clipped ones."""
        factors, norms = clip_factors(updates, self.bound)
        keep = torch.ones(len(norms), dtype=torch.bool)
        return Transformed(updates * factors[:, None], weights, keep, norms <= self.bound,
                           norms / self.bound, {"clipped": int((norms > self.bound).sum())})

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        check_updates(updates, weights)
        factors, norms = clip_factors(updates, self.bound)
        update = (normalized(weights) * factors).to(updates.dtype) @ updates
        return Aggregate(update, norms <= self.bound, norms / self.bound,
                         {"clipped": int((norms > self.bound).sum())})


@register("norm_clip", reference=CLIP_REFERENCE)
def norm_clip(bound: float = 1.0) -> NormClip:
    """Clip each update to Euclidean norm B, then average (or feed the next rule in a chain)."""
    return NormClip(check_positive("norm_clip", "bound", bound))


class DPGaussian:
    """Clip to B, weighted mean, plus N(0, (sigma * B * max_i w_i / sum_i w_i)^2) per coordinate."""

    def __init__(self, bound: float, sigma: float):
        self.bound, self.sigma = bound, sigma

    def __repr__(self) -> str:
        return f"dp_gaussian(bound={self.bound}, sigma={self.sigma})"

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        from poisonlab.rng import generator

        check_updates(updates, weights)
        factors, norms = clip_factors(updates, self.bound)
        w = normalized(weights)
        std = self.sigma * self.bound * float(w.max()) if len(w) else 0.0
        noise = torch.randn(updates.shape[1], generator=generator(ctx.seed, "dp_gaussian", ctx.round))
        update = (w * factors).to(updates.dtype) @ updates + std * noise.to(updates.dtype)
        return Aggregate(update, norms <= self.bound, norms / self.bound,
                         {"clipped": int((norms > self.bound).sum()), "noise_std": std})


@register("dp_gaussian", reference="Sun et al. 2019, Can You Really Backdoor Federated Learning? (weak DP);"
                                   " McMahan et al. 2018 (DP-FedAvg Gaussian mechanism)")
def dp_gaussian(bound: float = 1.0, sigma: float = 0.01) -> DPGaussian:
    """Weak DP: clip each update to norm B, average, add Gaussian noise of std sigma * B / n (uniform weights)."""
    return DPGaussian(check_positive("dp_gaussian", "bound", bound),
                      check_positive("dp_gaussian", "sigma", sigma, allow_zero=True))
