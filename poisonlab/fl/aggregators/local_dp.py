"""Local differential privacy: each client clips its update and adds its own Gaussian noise before sending.

x_i' = x_i * min(1, C / ||x_i||) + N(0, (sigma * C)^2 I_d) for every row (the Gaussian mechanism on
each client, L2 sensitivity C: Dwork and Roth 2014, Thm. A.1; Flower's LocalDpMod does the same on a
client). The noisy rows are passed on (a chain step: chain(local_dp(...), median) aggregates what the
clients would send); alone, the answer is their weighted mean. The (k, d) noise is drawn in one call
from a generator derived from ctx.seed and ctx.round, row i for the round's i-th client.
selected: rows not clipped (||x_i|| <= C); scores: ||x_i|| / C. Memory beyond the input: the noisy
(k, d) rows and the (k, d) noise.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import Rule, check_positive, row_norms_float64
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Dwork and Roth 2014, The Algorithmic Foundations of Differential Privacy (Gaussian mechanism);"
             " local DP for FL as in Flower's LocalDpMod and Sun et al. 2021 (LDP-FL)")


@AGGREGATORS.register("local_dp", reference=REFERENCE)
def local_dp(clip: float = 1.0, sigma: float = 0.01) -> Rule:
    """Each row clipped to norm clip and noised with N(0, (sigma * clip)^2) per coordinate; rows passed on."""
    clip = check_positive("local_dp", "clip", clip)
    sigma = check_positive("local_dp", "sigma", sigma, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        norms = row_norms_float64(updates)
        factors = (clip / norms.clamp_min(1e-300)).clamp_max(1.0).to(updates.dtype)
        noise = torch.randn(k, d, generator=generator(ctx.seed, "local_dp", ctx.round), device="cpu").to(updates)
        rows = torch.addcmul(noise.mul_(sigma * clip), updates, factors[:, None])
        return Aggregate(None, norms <= clip, (norms / clip).float(),
                         {"clipped": int((norms > clip).sum()), "noise_std": sigma * clip}, rows=rows)

    return Rule(apply, f"local_dp(clip={clip}, sigma={sigma})", transform=True,
                memory=lambda k, d, clients: {"local_dp noisy rows and noise ({k} x {d})": 8 * k * d})
