"""Bulyan (El Mhamdi et al. 2018), the original two-stage rule.

1. Selection: apply Krum (with f) to the remaining set R, move its choice to S, repeat until
   |S| = theta = n - 2f. The (n, n) distance matrix is computed once and each row's neighbours
   sorted once; removing a row only masks it, so each step is one vectorized pass over (n, n).
2. Aggregation: per coordinate, the beta = theta - 2f values of S closest to the median of S
   (numpy median), averaged.
Needs n >= 4f + 3; ignores client weights. selected: the theta rows of S; scores: the Krum
score of each row over all n rows (higher = more suspicious).
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, column_chunks, one_hot
from poisonlab.fl.aggregators.krum import distances_memory, krum_scores, pairwise_sq_distances
from poisonlab.fl.aggregators.median import coordinate_median
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("El Mhamdi, Guerraoui and Rouault 2018, The Hidden Vulnerability of Distributed Learning"
             " in Byzantium (ICML)")


def iterative_krum(dist: torch.Tensor, f: int, theta: int) -> torch.Tensor:
    """Indices chosen by theta successive Krum selections on the shrinking set (in order).

    At each step a remaining row's score sums its r - f - 2 nearest remaining neighbours (r = |R|).
    Exact ties (a mutual nearest pair when r - f - 2 = 1, everyone when it is <= 0) go to the row
    with the smaller total distance to the remaining rows (the medoid), then the lower index.
    """
    n = dist.shape[0]
    order = torch.argsort(dist + torch.diag(torch.full((n,), float("inf"), dtype=dist.dtype, device=dist.device)),
                         dim=1)
    near = torch.gather(dist, 1, order)  # row i's distances, nearest first; self is last
    not_self = order != torch.arange(n, device=dist.device)[:, None]
    active = torch.ones(n, dtype=torch.bool, device=dist.device)
    chosen = []
    for _ in range(theta):  # one vectorized (n, n) pass per selection, no distance recomputation
        q = int(active.sum()) - f - 2
        alive = active[order] & not_self
        take = alive & (torch.cumsum(alive, dim=1) <= q)
        scores = torch.where(take, near, torch.zeros((), dtype=near.dtype, device=near.device)).sum(dim=1)
        scores[~active] = float("inf")
        best = _argmin_tie_broken(scores, dist, active)
        chosen.append(best)
        active[best] = False
    return torch.tensor(chosen, dtype=torch.long, device=dist.device)


def _argmin_tie_broken(scores: torch.Tensor, dist: torch.Tensor, active: torch.Tensor) -> int:
    """The lowest score; ties (within 1e-9 relative) go to the smaller total distance to the remaining
    rows, then the lower index, so the choice does not depend on the row order (up to exact ties)."""
    low = scores.min()
    tied = active & (scores <= low + 1e-9 * low.abs().clamp_min(1e-30))
    if int(tied.sum()) == 1:
        return int(torch.nonzero(tied)[0])
    total = torch.where(tied, (dist * active).sum(dim=1), torch.full_like(scores, float("inf")))
    return int(torch.argmin(total))


def closest_to_median_mean(x: torch.Tensor, beta: int, chunk_bytes: int = CHUNK_BYTES,
                           rows: torch.Tensor | None = None) -> torch.Tensor:
    """Per column, the mean of the beta entries of x (theta, d) closest to that column's median.

    rows (an index tensor): of x[rows], gathered one column block at a time (every step is per column,
    so the blocks give what the whole x[rows] would, without its (theta, d) copy: 0.98x the input at
    n = 1000, f = 10).
    """
    theta, d = (x.shape[0] if rows is None else len(rows)), x.shape[1]
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    for cols in column_chunks(theta, d, 3 * x.element_size() + 8, chunk_bytes):
        block = x[:, cols] if rows is None else x[:, cols].index_select(0, rows)
        med = coordinate_median(block, chunk_bytes)
        nearest = torch.topk((block - med).abs(), beta, dim=0, largest=False).indices
        out[cols] = torch.gather(block, 0, nearest).mean(dim=0)
    return out


@AGGREGATORS.register("bulyan", reference=REFERENCE)
def bulyan(f: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Bulyan: iterative Krum selection, then a coordinate-wise trimmed mean around the median (n >= 4f + 3)."""
    f, chunk_bytes = check_int("bulyan", "f", f), check_int("bulyan", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        """ConfigError unless a round of n updates can be aggregated: n >= 4f + 3."""
        if n < 4 * f + 3:
            raise ConfigError(f"bulyan needs n >= 4f + 3; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        theta = n - 2 * f
        dist = pairwise_sq_distances(updates, chunk_bytes)
        chosen = iterative_krum(dist, f, theta)
        update = closest_to_median_mean(updates, theta - 2 * f, chunk_bytes, rows=chosen)
        return Aggregate(update, one_hot(n, chosen, updates.device), krum_scores(dist, f).float(), {"chosen": chosen.tolist()})

    return Rule(apply, f"bulyan(f={f})", check_rows=check_rows, memory=distances_memory("bulyan"))
