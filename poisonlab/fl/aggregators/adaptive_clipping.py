"""DP-FedAvg with adaptive clipping (Andrew, Thakkar, McMahan and Ramaswamy 2021), server- and client-side.

Round with clipping norm C (state 'clip_norm'; initial_clip before the first round) and m rows:
  clip: x_i' = x_i * min(1, C / ||x_i||), bit b_i = 1[||x_i|| <= C];
  update = sum_i w_i x_i' / sum_i w_i + N(0, (z_delta * C * max_i w_i / sum_i w_i)^2) per coordinate
           (= z_delta * C / m for equal weights, the paper's sum + N(0, (z_delta C)^2) divided by m);
  noisy count: b = (sum_i b_i + N(0, sigma_b^2)) / m; next C = C * exp(-clip_lr * (b - target_quantile))
  (the geometric update of Algorithm 1); sigma_b = clipped_count_stddev, or m / 20 when None (the
  paper's recommendation and Flower's default); z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2), the noise
  multiplier left for the update once the count has its share of the budget (Theorem 1; z_delta = z
  when sigma_b = 0, where the count is not private). z = 0: no noise on the update.
Without noise, C converges to the target_quantile quantile of a fixed set of norms.

dp_adaptive_clipping: all of the above at the server (Flower's
  DifferentialPrivacyServerSideAdaptiveClipping): a rule whose answer is the noisy mean.
dp_adaptive_client: Flower's DifferentialPrivacyClientSideAdaptiveClipping, where each client clips its
  own update with the C the server sent and reports its bit; here the clipping is applied to each
  row before aggregation (a step that passes the clipped rows on: Aggregate.scale), so it may come
  before any rule in a chain (chain(dp_adaptive_client(...), median) - the clients clip, the server
  aggregates robustly; the Gaussian noise is then not added, since the next rule aggregates). Alone, its
  answer is the server's noisy mean as above. The C update is the same noisy-count rule.
selected: rows not clipped (b_i = 1); scores: ||x_i|| / C. Noise generators derive from ctx.seed and
ctx.round (rng.generator); info: clip_norm (this round's C), next_clip_norm, noise_std, clipped.
"""

from __future__ import annotations

import math

import torch

from poisonlab.errors import ConfigError, record_range
from poisonlab.fl.aggregators.base import Rule, check_positive, normalized, row_norms_float64
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Andrew, Thakkar, McMahan and Ramaswamy 2021, Differentially Private Learning with Adaptive"
             " Clipping (NeurIPS); Flower's DifferentialPrivacy{Server,Client}SideAdaptiveClipping")


class AdaptiveClip:
    """The validated parameters and the per-round arithmetic shared by the server- and client-side rules."""

    def __init__(self, rule: str, noise_multiplier, initial_clip, target_quantile, clip_lr, clipped_count_stddev):
        self.rule = rule
        self.z = check_positive(rule, "noise_multiplier", noise_multiplier, allow_zero=True)
        self.initial_clip = check_positive(rule, "initial_clip", initial_clip)
        record_range("target_quantile", "[0, 1]")  # the range shown by `poisonlab list` (the first recorded)
        self.target = check_positive(rule, "target_quantile", target_quantile, allow_zero=True)
        if self.target > 1:
            raise ConfigError(f"{rule}: target_quantile={target_quantile!r} is out of range; accepted: 0 <= q <= 1")
        self.lr = check_positive(rule, "clip_lr", clip_lr)
        self.sigma_b = None if clipped_count_stddev is None else check_positive(
            rule, "clipped_count_stddev", clipped_count_stddev, allow_zero=True)

    def count_stddev(self, m: int) -> float:
        """sigma_b for a round of m rows (m / 20 when not given)."""
        return m / 20 if self.sigma_b is None else self.sigma_b

    def update_multiplier(self, m: int) -> float:
        """z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) (z when sigma_b = 0 or z = 0)."""
        sigma_b = self.count_stddev(m)
        if self.z == 0 or sigma_b == 0:
            return self.z
        return (self.z ** -2 - (2 * sigma_b) ** -2) ** -0.5

    def check_rows(self, n: int) -> None:
        sigma_b = self.count_stddev(n)
        if self.z > 0 and 0 < sigma_b and self.z >= 2 * sigma_b:
            raise ConfigError(f"{self.rule}: noise_multiplier={self.z} must be < 2 * clipped_count_stddev"
                              f" = {2 * sigma_b} (a round of {n} clients); accepted: a smaller noise_multiplier,"
                              " a larger clipped_count_stddev or more clients per round")

    def round(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext, name: str) -> Aggregate:
        """The clipped rows (scale) and their noisy mean (update), with the next C in the state."""
        k, d = updates.shape
        clip = float((ctx.state or {}).get("clip_norm", self.initial_clip))
        norms = row_norms_float64(updates)
        factors = (clip / norms.clamp_min(1e-300)).clamp_max(1.0)
        bits = norms <= clip
        w = normalized(weights)
        z_delta = self.update_multiplier(k)
        std = z_delta * clip * float(w.max())
        noise = torch.randn(d, generator=generator(ctx.seed, name, "update", ctx.round), device="cpu").to(updates)
        update = (w.double() * factors).to(updates.dtype) @ updates + std * noise
        count_noise = float(torch.randn(1, generator=generator(ctx.seed, name, "count", ctx.round), device="cpu"))
        fraction = (float(bits.sum()) + self.count_stddev(k) * count_noise) / k
        next_clip = clip * math.exp(-self.lr * (fraction - self.target))
        next_clip = min(max(next_clip, 1e-30), 1e30)  # a finite positive C whatever the noise draws
        info = {"clip_norm": clip, "next_clip_norm": next_clip, "noise_std": std, "clipped": int((~bits).sum())}
        return Aggregate(update, bits, (norms / clip).float(), info, {"clip_norm": next_clip},
                         scale=factors.to(updates.dtype))

    def text(self) -> str:
        return (f"noise_multiplier={self.z}, initial_clip={self.initial_clip}, target_quantile={self.target},"
                f" clip_lr={self.lr}, clipped_count_stddev={self.sigma_b}")


@AGGREGATORS.register("dp_adaptive_clipping", reference=REFERENCE)
def dp_adaptive_clipping(noise_multiplier: float = 0.0, initial_clip: float = 0.1, target_quantile: float = 0.5,
                         clip_lr: float = 0.2, clipped_count_stddev: float | None = None) -> Rule:
    """Server-side adaptive clipping: clip to C, noisy weighted mean, C follows the target quantile (state)."""
    p = AdaptiveClip("dp_adaptive_clipping", noise_multiplier, initial_clip, target_quantile, clip_lr,
                     clipped_count_stddev)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        agg = p.round(updates, weights, ctx, "dp_adaptive_clipping")
        return Aggregate(agg.update, agg.selected, agg.scores, agg.info, agg.state)

    return Rule(apply, f"dp_adaptive_clipping({p.text()})", check_rows=p.check_rows)


@AGGREGATORS.register("dp_adaptive_client", reference=REFERENCE)
def dp_adaptive_client(noise_multiplier: float = 0.0, initial_clip: float = 0.1, target_quantile: float = 0.5,
                       clip_lr: float = 0.2, clipped_count_stddev: float | None = None) -> Rule:
    """Client-side adaptive clipping: rows clipped to C (a chain step); C tracks a quantile (state).

    C follows the target quantile from the clients' noisy bits; alone, the answer is the server's noisy mean."""
    p = AdaptiveClip("dp_adaptive_client", noise_multiplier, initial_clip, target_quantile, clip_lr,
                     clipped_count_stddev)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        return p.round(updates, weights, ctx, "dp_adaptive_client")

    return Rule(apply, f"dp_adaptive_client({p.text()})", check_rows=p.check_rows, transform=True)
