"""SignGuard (Xu, Huang, Zhang and Zhou 2022): a norm filter and a sign-statistics clustering filter.

With M = median_i ||x_i|| (numpy's median: even k averages the two middle norms):
1. norm filter: S1 = {i : lower <= ||x_i|| / M <= upper} (the paper's L = 0.1, R = 3.0);
2. sign filter: a random subset of ceil(fraction * d) coordinates (generator derived from ctx.seed
   and ctx.round) gives each row its sign statistics (share of positive, zero and negative entries,
   a point in the 3-simplex); MeanShift, the paper's clustering (scikit-learn; bandwidth from
   estimate_bandwidth at quantile 0.5, bin seeding, orphans unassigned, as FLPoison's option) clusters
   these points and S2 = its largest cluster (all rows when the points do not differ). Blades
   substitutes 2-means on all coordinates; fraction=1 gives the full sign statistics here too;
3. update = the weighted mean over S1 ∩ S2 of the rows clipped to M: x_i * min(1, M / ||x_i||).
selected: S1 ∩ S2; scores: 0 for a selected row, 1 if it fails one filter, 2 if both.
Paper: Algorithm 1 of "Byzantine-robust Federated Learning through Collaborative Malicious Gradient
Filtering" (ICDCS 2022).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from poisonlab.errors import ConfigError, record_range
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_positive, normalized, row_norms_float64
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Xu, Huang, Zhang and Zhou 2022, Byzantine-robust Federated Learning through Collaborative"
             " Malicious Gradient Filtering (ICDCS)")


def norm_filter(norms: torch.Tensor, lower: float, upper: float) -> tuple[torch.Tensor, float]:
    """(S1 mask, M): rows whose norm ratio to the median norm M lies in [lower, upper]."""
    median = float(norms.quantile(0.5)) if len(norms) < 2**24 else float(norms.median())
    if median <= 0:
        return norms == 0, median  # every ratio is 0/0 or x/0: keep only the zero rows as the median ones
    ratio = norms / median
    return (ratio >= lower) & (ratio <= upper), median


def sign_statistics(updates: torch.Tensor, fraction: float, seed: int, round: int) -> np.ndarray:
    """(k, 3) float64 shares of positive, zero and negative entries on a random coordinate subset."""
    d = updates.shape[1]
    m = max(1, math.ceil(fraction * d))
    order = torch.randperm(d, generator=generator(seed, "signguard", round), device="cpu")
    cols = order[:m].sort().values.to(updates.device)  # in order: a cache-friendlier gather
    part = updates.index_select(1, cols)
    stats = torch.stack([(part > 0).sum(dim=1), (part == 0).sum(dim=1), (part < 0).sum(dim=1)], dim=1)
    return (stats.double() / m).cpu().numpy()


def sign_filter(stats: np.ndarray) -> np.ndarray:
    """S2 mask (k,): the largest MeanShift cluster of the sign statistics (all rows if they do not differ)."""
    from sklearn.cluster import MeanShift, estimate_bandwidth

    k = len(stats)
    if k < 2 or np.ptp(stats, axis=0).max() == 0:
        return np.ones(k, dtype=bool)
    bandwidth = estimate_bandwidth(stats, quantile=0.5)
    if not bandwidth > 0:
        return np.ones(k, dtype=bool)
    labels = MeanShift(bandwidth=bandwidth, bin_seeding=True, cluster_all=False).fit(stats).labels_
    if (labels < 0).all():
        return np.ones(k, dtype=bool)
    return labels == np.bincount(labels[labels >= 0]).argmax()


@AGGREGATORS.register("signguard", reference=REFERENCE)
def signguard(lower: float = 0.1, upper: float = 3.0, fraction: float = 0.1) -> Rule:
    """SignGuard: norm-ratio filter, MeanShift on sign statistics; mean of survivors clipped to the median norm."""
    lower = check_positive("signguard", "lower", lower, allow_zero=True)
    upper = check_positive("signguard", "upper", upper)
    record_range("fraction", "(0, 1]")  # the range shown by `poisonlab list` (the first recorded)
    fraction = check_positive("signguard", "fraction", fraction)
    if lower > upper or fraction > 1:
        raise ConfigError(f"signguard: lower={lower}, upper={upper}, fraction={fraction} out of range;"
                          " accepted: 0 <= lower <= upper, 0 < fraction <= 1")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        norms = row_norms_float64(updates, CHUNK_BYTES)
        s1, median = norm_filter(norms, lower, upper)
        s2 = torch.from_numpy(sign_filter(sign_statistics(updates, fraction, ctx.seed, ctx.round)))
        s1, s2 = s1.to(updates.device), s2.to(updates.device)
        keep = s1 & s2
        factors = (median / norms.clamp_min(1e-300)).clamp_max(1.0)
        update = (normalized(weights * keep).double() * factors).to(updates.dtype) @ updates
        scores = (~s1).float() + (~s2).float()
        return Aggregate(update, keep, scores, {"clip_bound": median, "norm_rejected": int((~s1).sum()),
                                                "sign_rejected": int((~s2).sum())})

    return Rule(apply, f"signguard(lower={lower}, upper={upper}, fraction={fraction})",
                memory=lambda k, d, clients: {"signguard coordinate subset": 4 * k * max(1, math.ceil(fraction * d))})
