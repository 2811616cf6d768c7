"""The gap statistic (Tibshirani, Walther and Hastie 2001) on 1-D scores, with exact 1-D k-means.

W_c: the within-cluster sum of squares of the optimal c-clustering of the scores (1-D k-means is
solved exactly by dynamic programming over the sorted values, Wang and Song 2011, so the answer does
not depend on initialisation). With the scores min-max scaled to [0, 1] and B reference samples of
the same size drawn uniformly on [0, 1] (the generator the caller passes),
  Gap(c) = mean_b log W*_cb - log W_c,   s_c = sd_b(log W*_cb) sqrt(1 + 1/B),
and the number of clusters is the smallest c with Gap(c) >= Gap(c + 1) - s_{c + 1} (c_max if none).
All reference samples are clustered together as one batch (no loop over samples or points).
"""

from __future__ import annotations

import torch


def kmeans_1d_sse(values: torch.Tensor, clusters: int) -> torch.Tensor:
    """(batch, clusters) float64: the optimal within-cluster SSE of each row of values (batch, n) for
    1..clusters clusters (exact dynamic programme; c > number of points gives 0)."""
    x = values.double().sort(dim=1).values
    b, n = x.shape
    zero = torch.zeros(b, 1, dtype=torch.float64, device=x.device)
    s, q = torch.cat([zero, x.cumsum(1)], 1), torch.cat([zero, (x * x).cumsum(1)], 1)
    i = torch.arange(n, device=x.device)
    lo, hi = i[:, None], i[None, :]  # segment x[lo..hi]
    count = (hi - lo + 1).clamp_min(1).double()
    seg_sum = s[:, 1:][:, None, :] - s[:, :-1][:, :, None]
    seg_sq = q[:, 1:][:, None, :] - q[:, :-1][:, :, None]
    cost = (seg_sq - seg_sum ** 2 / count).clamp_min(0)
    cost = torch.where((lo <= hi)[None], cost, torch.full_like(cost, float("inf")))
    best = cost[:, 0, :]  # one cluster covering x[0..j]
    out = [best[:, -1]]
    for _ in range(1, clusters):
        # best_new[j] = min over lo >= 1 of best[lo - 1] + cost[lo, j]
        prev = torch.cat([torch.full((b, 1), float("inf"), dtype=torch.float64, device=x.device), best[:, :-1]], 1)
        best = torch.minimum(best, (prev[:, :, None] + cost).min(dim=1).values)
        out.append(best[:, -1])
    return torch.stack(out, dim=1)


def gap_clusters(scores: torch.Tensor, generator: torch.Generator, max_clusters: int = 10,
                 references: int = 20) -> int:
    """The number of clusters the gap statistic chooses for 1-D scores (1 when they are all equal)."""
    x = scores.double().flatten().cpu()
    n = len(x)
    spread = float(x.max() - x.min()) if n else 0.0
    if n < 3 or not spread > 0:
        return 1
    c_max = min(max_clusters, n - 1)
    x = (x - x.min()) / spread
    ref = torch.rand(references, n, generator=generator, dtype=torch.float64, device="cpu")
    tiny = 1e-300  # W = 0 (as many clusters as distinct values): log stays finite
    log_w = kmeans_1d_sse(x[None], c_max + 1)[0].clamp_min(tiny).log()
    log_ref = kmeans_1d_sse(ref, c_max + 1).clamp_min(tiny).log()
    gap = log_ref.mean(0) - log_w
    s = log_ref.std(0, unbiased=False) * (1 + 1 / references) ** 0.5
    for c in range(1, c_max + 1):
        if gap[c - 1] >= gap[c] - s[c]:
            return c
    return c_max
