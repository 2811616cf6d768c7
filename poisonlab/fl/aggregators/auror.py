"""Auror (Shen, Tople and Saxena 2016): flag clients that sit in the minority on indicative features.

For every coordinate j the k values x_1j..x_kj are split into two clusters by 1-D 2-means; the
coordinate is *indicative* when the two centres are more than alpha apart. A client is suspicious
on an indicative coordinate when it lies in the smaller cluster (equal sizes: no one), and it is
flagged when it is suspicious on more than a fraction tau of the indicative coordinates (no
indicative coordinate: no one is flagged).
update = weighted mean of the rows not flagged (all rows if every row is: possible only for tau < 0.5,
since fewer than k / 2 rows are in the minority of a coordinate). selected: the rows averaged;
scores: the fraction of indicative coordinates where the row is in the minority.

1-D 2-means is solved exactly rather than by Lloyd iterations: the optimal split of sorted values
is a threshold, so for each coordinate every split s = 1..k-1 of the sorted column is scored by
its within-cluster sum of squares from prefix sums (SSE = sum x^2 - S_left^2 / s - S_right^2 / (k - s))
and the smallest is taken (ties: the first). All coordinates at once, in column chunks of at most
base.CHUNK_BYTES. The paper clusters the features of a collaborative-learning round; as in FL
implementations (FLPoison) the features here are the update's coordinates.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_positive, column_chunks, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Shen, Tople and Saxena 2016, Auror: Defending Against Poisoning Attacks in Collaborative Deep"
             " Learning Systems (ACSAC)")


def two_means_1d(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact 1-D 2-means of each column of block (k, c), k >= 2: (centre gap (c,), left count (c,),
    rank (k, c) of each entry in its column's sorted order); the left cluster is ranks < left count."""
    k = block.shape[0]
    x = block.double()
    values, order = x.sort(dim=0)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(k, device=x.device)[:, None].expand_as(order))
    csum, csq = values.cumsum(0), (values * values).cumsum(0)
    total, total_sq = csum[-1], csq[-1]
    n_left = torch.arange(1, k, dtype=torch.float64, device=x.device)[:, None]
    s_left = csum[:-1]
    s_right = total - s_left
    sse = total_sq - s_left ** 2 / n_left - s_right ** 2 / (k - n_left)
    split = sse.argmin(dim=0)  # index s - 1 of the best split
    left_mean = s_left.gather(0, split[None]).squeeze(0) / (split + 1)
    right_mean = s_right.gather(0, split[None]).squeeze(0) / (k - split - 1)
    return (right_mean - left_mean), split + 1, rank


def minority_fractions(x: torch.Tensor, alpha: float, chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, int]:
    """(fraction (k,) of indicative coordinates where each row is in the smaller cluster, number of
    indicative coordinates)."""
    k, d = x.shape
    count = torch.zeros(k, dtype=torch.float64, device=x.device)
    indicative = 0
    for cols in column_chunks(k, d, 48, chunk_bytes):  # sort, ranks, prefix sums in float64/long
        gap, n_left, rank = two_means_1d(x[:, cols])
        ind = gap > alpha
        left_small, right_small = n_left < k - n_left, n_left > k - n_left
        in_left = rank < n_left[None, :]
        minority = (in_left & left_small[None, :]) | (~in_left & right_small[None, :])
        count += (minority & ind[None, :]).sum(dim=1)
        indicative += int(ind.sum())
    return count / max(indicative, 1), indicative


@AGGREGATORS.register("auror", reference=REFERENCE)
def auror(alpha: float = 0.02, tau: float = 0.5) -> Rule:
    """Auror: flag clients in the minority 2-means cluster of more than tau of the indicative coordinates."""
    alpha = check_positive("auror", "alpha", alpha, allow_zero=True)
    tau = check_positive("auror", "tau", tau, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k = updates.shape[0]
        if k < 2:
            return Aggregate(updates[0].clone(), torch.ones(1, dtype=torch.bool, device=updates.device),
                             torch.zeros(1, device=updates.device), {"indicative": 0})
        frac, indicative = minority_fractions(updates, alpha)
        flagged = frac > tau
        everyone = bool(flagged.all())  # only possible with tau < 0.5: then no row is set aside
        keep = torch.ones_like(flagged) if everyone else ~flagged
        update = normalized(weights * keep).to(updates.dtype) @ updates
        return Aggregate(update, keep, frac.float(), {"indicative": indicative, "all_flagged": everyone})

    return Rule(apply, f"auror(alpha={alpha}, tau={tau})",
                memory=lambda k, d, clients: {"auror column chunks": min(CHUNK_BYTES, 48 * k * d)})
