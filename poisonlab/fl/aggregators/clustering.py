"""Clustering rules that keep the larger of two clusters of updates, then average it.

clustering (Sattler, Mueller and Samek 2020, Clustered Federated Learning): the cosine distances
  1 - cos(x_i, x_j) are bi-partitioned by agglomerative clustering (scipy.cluster.hierarchy, cut at
  two clusters). linkage="single" gives exactly the bi-partition of eq. (the one that minimises the
  largest cross-cluster cosine similarity, max_{i in c1, j in c2} cos(x_i, x_j)); "complete" is what
  the authors' reference code runs; "average" is Blades' default. update = weighted mean of the larger
  cluster.
clipped_clustering (Li, Xia, Wang et al. 2023, An Experimental Study of Byzantine-Robust Aggregation
  Schemes in Federated Learning): each row is clipped to tau = the median of every update norm seen
  so far (this round's included; state 'norms'), then the same bi-partition (cosine is scale
  invariant, so clipping does not move the clusters; average linkage as in the paper) and the weighted
  mean of the larger cluster's clipped rows.
majority_cluster: plain 2-means (Lloyd) on the Euclidean geometry of the rows, started from the
  farthest pair, computed from the (k, k) Gram matrix; weighted mean of the larger cluster. (FLPoison's
  SimpleClustering keeps the largest DBSCAN(eps=0.05) or MeanShift cluster of the raw updates; 2-means
  has no absolute radius to tune, so it behaves the same at any update scale.)

The larger cluster has more rows; a tie goes to the larger total weight, then to the cluster holding
the lowest row index. selected: rows of the larger cluster; scores: 1 for the other cluster, 0 for
the kept one (clipped_clustering: the kept rows' ||x_i|| / tau). Memory beyond the input: the (k, k)
float64 matrices and cache-sized column blocks (base.block_gram).
"""

from __future__ import annotations

import numpy as np
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import (CHUNK_BYTES, Rule, block_gram, check_int, normalized, row_abs_max,
                                           row_norms_float64)
from poisonlab.fl.aggregators.flame import cosine_distances
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

SATTLER = ("Sattler, Mueller and Samek 2020, Clustered Federated Learning: Model-Agnostic Distributed"
           " Multitask Optimization Under Privacy Constraints (IEEE TNNLS)")
LI = ("Li, Xia, Wang et al. 2023, An Experimental Study of Byzantine-Robust Aggregation Schemes in Federated"
      " Learning (IEEE Transactions on Big Data; Blades)")
KMEANS = ("Lloyd 1982, Least squares quantization in PCM (2-means); the majority-cluster filter of FLPoison"
          " (SimpleClustering)")
LINKAGES = ("single", "complete", "average")


def bipartition(dist: np.ndarray, linkage: str) -> np.ndarray:
    """Cluster labels in {0, 1} (k,) from agglomerative clustering of a (k, k) distance matrix cut at two."""
    from scipy.cluster.hierarchy import fcluster, linkage as hierarchy
    from scipy.spatial.distance import squareform

    k = dist.shape[0]
    if k < 2:
        return np.zeros(k, dtype=np.int64)
    tree = hierarchy(squareform(dist, checks=False), method=linkage)
    return fcluster(tree, t=2, criterion="maxclust").astype(np.int64) - 1


def larger_cluster(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """bool (k,) mask of the cluster with more rows (tie: more total weight, then the lowest row index)."""
    first = labels == labels[0]
    n_first, n_other = int(first.sum()), int((~first).sum())
    if n_first != n_other:
        return first if n_first > n_other else ~first
    w_first, w_other = float(weights[first].sum()), float(weights[~first].sum())
    return ~first if w_other > w_first else first


def cluster_mask(x: torch.Tensor, weights: torch.Tensor, linkage: str) -> torch.Tensor:
    """The larger cluster of the cosine bi-partition of the rows of x, as a bool (k,) mask on x's device."""
    labels = torch.from_numpy(bipartition(cosine_distances(x), linkage)).to(x.device)
    return larger_cluster(labels, weights)


def check_linkage(rule: str, linkage: str) -> str:
    if linkage not in LINKAGES:
        raise ConfigError(f"{rule}: linkage={linkage!r} is not known; accepted: {', '.join(LINKAGES)}")
    return linkage


@AGGREGATORS.register("clustering", reference=SATTLER)
def clustering(linkage: str = "single") -> Rule:
    """Cosine bi-partition (agglomerative, two clusters); weighted mean of the larger cluster."""
    linkage = check_linkage("clustering", linkage)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        keep = cluster_mask(updates, weights, linkage)
        update = normalized(weights * keep).to(updates.dtype) @ updates
        return Aggregate(update, keep, (~keep).float(), {"cluster_size": int(keep.sum())})

    return Rule(apply, f"clustering(linkage={linkage!r})",
                memory=lambda k, d, clients: {"cosine matrix and blocks": 16 * k * k + 4 * 2**20})


@AGGREGATORS.register("clipped_clustering", reference=LI)
def clipped_clustering(linkage: str = "average") -> Rule:
    """Clip to the median of all norms seen so far (state), cosine bi-partition, mean of the larger cluster.

    State: {'norms': float64 (n,) every row norm of the rounds so far, this one's included}.
    """
    linkage = check_linkage("clipped_clustering", linkage)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        norms = row_norms_float64(updates, CHUNK_BYTES)
        past = (ctx.state or {}).get("norms")
        history = norms if past is None else torch.cat([past.to(norms), norms])
        tau = float(history.quantile(0.5)) if len(history) < 2**24 else float(history.median())
        factors = (tau / norms.clamp_min(1e-300)).clamp_max(1.0)
        keep = cluster_mask(updates, weights, linkage)
        update = (normalized(weights * keep).double() * factors).to(updates.dtype) @ updates
        scores = torch.where(keep, norms / max(tau, 1e-300), torch.ones_like(norms)).float()
        return Aggregate(update, keep, scores, {"clip_bound": tau, "cluster_size": int(keep.sum())},
                         state={"norms": history})

    return Rule(apply, f"clipped_clustering(linkage={linkage!r})",
                memory=lambda k, d, clients: {"cosine matrix and blocks": 16 * k * k + 4 * 2**20})


def scaled_gram(x: torch.Tensor) -> torch.Tensor:
    """(k, k) float64 centred Gram matrix of x scaled by one power of two (its largest entry into [0.5, 1]):
    2-means is invariant to a common scale, and float32 block products then neither overflow nor vanish."""
    top = row_abs_max(x).max().double()
    exponent = int(torch.frexp(top).exponent.clamp(-125, 125))
    scale = torch.full((x.shape[0],), 2.0 ** -exponent, dtype=x.dtype, device=x.device)
    return block_gram(x, center=True, row_scale=scale)


def two_means(gram: torch.Tensor, max_iter: int) -> torch.Tensor:
    """Labels (k,) in {0, 1} of Lloyd's 2-means from a (k, k) Gram matrix, started at the farthest pair."""
    k = gram.shape[0]
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)
    far = int(dist.argmax())
    i, j = divmod(far, k)
    labels = (dist[:, j] < dist[:, i]).long()  # nearer to j: cluster 1
    for _ in range(max_iter):
        member = torch.stack([labels == 0, labels == 1], dim=1).double()  # (k, 2)
        size = member.sum(dim=0).clamp_min(1)
        cross = gram @ member / size  # mean_j in C of <x_i, x_j>
        within = (member * (gram @ member)).sum(dim=0) / size**2
        new = (sq[:, None] - 2 * cross + within).argmin(dim=1)
        if bool((new == labels).all()):
            break
        labels = new
    return labels


@AGGREGATORS.register("majority_cluster", reference=KMEANS)
def majority_cluster(max_iter: int = 100) -> Rule:
    """2-means on the rows (from the Gram matrix); weighted mean of the larger cluster."""
    max_iter = check_int("majority_cluster", "max_iter", max_iter, low=1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if updates.shape[0] < 2:
            keep = torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device)
        else:
            keep = larger_cluster(two_means(scaled_gram(updates), max_iter).to(updates.device), weights)
        update = normalized(weights * keep).to(updates.dtype) @ updates
        return Aggregate(update, keep, (~keep).float(), {"cluster_size": int(keep.sum())})

    return Rule(apply, f"majority_cluster(max_iter={max_iter})",
                memory=lambda k, d, clients: {"gram matrix and blocks": 16 * k * k + 4 * 2**20})
