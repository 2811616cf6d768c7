"""FLAME (Nguyen et al. 2022): cluster out odd directions, clip to the median norm, add noise.

1. HDBSCAN (sklearn.cluster.HDBSCAN, min_cluster_size = k // 2 + 1, min_samples = 1) on the
   cosine distances 1 - cos(x_i, x_j); the rows of the (majority) cluster are admitted
   (all rows if HDBSCAN finds no cluster, noted in info).
2. S = median_i ||x_i|| over all rows; admitted rows clipped: x_i * min(1, S / ||x_i||).
3. update = mean of the clipped admitted rows + N(0, (lambda * S)^2) per coordinate
   (generator derived from ctx.seed and ctx.round). Client weights are ignored, as in the paper.
selected: admitted rows; scores: 1 - HDBSCAN membership probability (1 for noise points).

Memory beyond the (k, d) input: the (k, k) cosine matrix and column or row chunks of at most 256 MiB
(base.CHUNK_BYTES; cosines and float64 norms are built chunk by chunk, never from a float64 or abs()
copy of the whole input), plus the (d,) noise and update.
"""

from __future__ import annotations

import numpy as np
import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_positive, cosine_similarities, row_norms_float64
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Nguyen et al. 2022, FLAME: Taming Backdoors in Federated Learning (USENIX Security)")


def cosine_distances(x: torch.Tensor) -> np.ndarray:
    """(k, k) float64 matrix 1 - cos(x_i, x_j), zero diagonal, clipped to [0, 2]."""
    dist = (1 - cosine_similarities(x)).clamp(0, 2)
    dist.fill_diagonal_(0)
    return ((dist + dist.T) / 2).cpu().numpy()  # the small (k, k) matrix goes to scikit-learn on the CPU


def majority_cluster(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(admitted mask, outlier score in [0, 1], found) from HDBSCAN on precomputed distances."""
    from sklearn.cluster import HDBSCAN

    k = dist.shape[0]
    if k < 3:
        return np.ones(k, bool), np.zeros(k), False
    model = HDBSCAN(min_cluster_size=k // 2 + 1, min_samples=1, metric="precomputed",
                    allow_single_cluster=True, copy=True).fit(dist)
    labels = model.labels_
    if (labels < 0).all():
        return np.ones(k, bool), 1 - model.probabilities_, False
    biggest = np.bincount(labels[labels >= 0]).argmax()
    return labels == biggest, 1 - model.probabilities_, True


@AGGREGATORS.register("flame", reference=REFERENCE)
def flame(noise_lambda: float = 0.001) -> Rule:
    """FLAME: admit the majority HDBSCAN cluster of cosine distances, clip to the median norm, add noise."""
    noise_lambda = check_positive("flame", "noise_lambda", noise_lambda, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        admitted, outlier, found = majority_cluster(cosine_distances(updates))
        admitted = torch.from_numpy(admitted).to(updates.device)
        norms = row_norms_float64(updates, CHUNK_BYTES)
        bound = float(norms.median()) if k % 2 else float(norms.double().quantile(0.5))
        factors = ((bound / norms.clamp_min(1e-30)).clamp_max(1.0) * admitted / admitted.sum()).float()
        noise = torch.randn(d, generator=generator(ctx.seed, "flame", ctx.round), device="cpu").to(updates)
        update = factors.to(updates.dtype) @ updates + noise_lambda * bound * noise
        return Aggregate(update, admitted, torch.from_numpy(outlier).float().to(updates.device),
                         {"clip_bound": bound, "cluster_found": found, "admitted": int(admitted.sum())})

    return Rule(apply, f"flame(noise_lambda={noise_lambda})",
                memory=lambda k, d, clients: {"flame cosines and chunks": 8 * k * k + min(CHUNK_BYTES, 8 * k * d)})
