"""Minimum-diameter averaging, MDA (El Mhamdi, Guerraoui, Guirguis, Hoang and Rouault 2020).

Among all subsets S of n - f rows, the one of smallest diameter max_{i, j in S} ||x_i - x_j||; the
answer is its plain mean. With f < n / 2 attackers some subset holds only honest rows, so the chosen
one's diameter is at most the honest diameter and every row in it, attackers included, lies within
that distance of an honest row. The search is exact and exponential: C(n, f) subsets (subsets.py;
refused in one line above max_subsets). Vectorized: the pairs are sorted by distance once; a subset's
diameter is its first pair (largest first) with both rows in it, found for a chunk of subsets at once
as one (subsets, pairs) mask. Ties between subsets go to the first in lexicographic order of the rows
left out. Client weights are not used (as in the paper).
selected: the rows of the chosen subset; scores: ||x_i - update||.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, distances_to
from poisonlab.fl.aggregators.gram import gram_memory, sq_distances
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.aggregators.subsets import MAX_SUBSETS, check_subsets, left_out_masks
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("El Mhamdi, Guerraoui, Guirguis, Hoang and Rouault 2020, Genuinely Distributed Byzantine Machine"
             " Learning (PODC), minimum-diameter averaging")


def minimum_diameter_subset(dist: torch.Tensor, f: int) -> tuple[torch.Tensor, float]:
    """(bool (n,) mask of the n - f rows of smallest diameter, that squared diameter)."""
    n = dist.shape[0]
    i, j = torch.triu_indices(n, n, 1, device=dist.device)
    pair_sq = dist[i, j]
    order = torch.argsort(pair_sq, descending=True, stable=True)
    i, j, pair_sq = i[order], j[order], pair_sq[order]
    best, best_mask = float("inf"), torch.ones(n, dtype=torch.bool, device=dist.device)
    if n - f < 2:  # one row left: diameter 0, the first subset in order
        return next(left_out_masks(n, f, dist.device))[0].logical_not(), 0.0
    chunk = max(1, (64 << 20) // max(1, len(pair_sq)))  # (chunk, pairs) bool masks of 64 MiB
    for out in left_out_masks(n, f, dist.device, chunk):
        inside = ~(out[:, i] | out[:, j])  # (c, pairs): both rows of the pair are in the subset
        diameter = pair_sq[inside.to(torch.uint8).argmax(dim=1)]  # first pair inside, largest first
        low = int(torch.argmin(diameter))
        if float(diameter[low]) < best:
            best, best_mask = float(diameter[low]), ~out[low]
    return best_mask, best


@AGGREGATORS.register("mda", reference=REFERENCE)
def mda(f: int = 1, max_subsets: int = MAX_SUBSETS, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """MDA: the mean of the n - f updates of smallest diameter (exact search; needs n > 2f, C(n, f) <= max_subsets)."""
    f = check_int("mda", "f", f)
    max_subsets = check_int("mda", "max_subsets", max_subsets, low=1)
    chunk_bytes = check_int("mda", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        check_subsets("mda", n, f, max_subsets)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        chosen, diameter_sq = minimum_diameter_subset(sq_distances(updates, chunk_bytes), f)
        coef = chosen.to(updates.dtype) / int(chosen.sum())
        update = coef @ updates
        return Aggregate(update, chosen, distances_to(updates, update), {"diameter": diameter_sq ** 0.5})

    return Rule(apply, f"mda(f={f})", check_rows=check_rows, memory=gram_memory("mda"))
