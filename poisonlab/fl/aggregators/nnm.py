"""Nearest-neighbour mixing, NNM (Allouah et al. 2023), a pre-aggregator.

Each row is replaced by the plain mean of its n - f nearest rows (itself included, Euclidean):
y_i = (1 / (n - f)) sum_{j in N_i} x_j. The mixed rows feed the next rule of a chain
(``chain(nnm(f=2), trimmed_mean(beta=0.2))``); alone it answers their weighted mean. Mixing pulls every
row towards the honest majority, which is what lets a rule like Krum or the median reach the optimal
error under heterogeneity (the paper's Theorem). The n - f neighbours come from one (k, k) distance
matrix; the mixed rows are one (k, k) @ (k, d) product. Needs n > 2f; client weights are not used for
the mixing (as in the paper), only passed on.
selected: all rows; scores: the distance to the mixed row, ||x_i - y_i||.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int
from poisonlab.fl.aggregators.gram import gram_memory, sq_distances
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Allouah, Farhadkhani, Guerraoui, Gupta, Pinot and Stephan 2023, Fixing by Mixing: A Recipe for"
             " Optimal Byzantine ML under Heterogeneity (AISTATS)")


def nearest_mixing(dist: torch.Tensor, q: int) -> torch.Tensor:
    """(n, n) float64 mixing matrix: row i has 1/q at its q nearest rows (itself first: distance 0).

    Ties at the q-th distance go to the lower index (stable sort), so a row's own index is always in."""
    n = dist.shape[0]
    off = dist.clone()
    off.fill_diagonal_(-1.0)  # itself first, even against exact duplicates
    nearest = torch.sort(off, dim=1, stable=True).indices[:, :q]
    mix = torch.zeros(n, n, dtype=torch.float64, device=dist.device)
    mix.scatter_(1, nearest, 1.0 / q)
    return mix


@AGGREGATORS.register("nnm", reference=REFERENCE)
def nnm(f: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """NNM pre-aggregator: replace each update by the mean of its n - f nearest updates (needs n > 2f)."""
    f, chunk_bytes = check_int("nnm", "f", f), check_int("nnm", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        if not n > 2 * f:
            raise ConfigError(f"nnm needs n > 2f; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        dist = sq_distances(updates, chunk_bytes)
        mix = nearest_mixing(dist, n - f)
        mixed = mix.to(updates.dtype) @ updates
        moved = mix - torch.eye(n, dtype=mix.dtype, device=mix.device)  # rows sum to 0, so
        shift = (-(moved @ dist * moved).sum(dim=1) / 2).clamp_min(0).sqrt()  # ||sum a_j x_j||^2 = -a^T D a / 2
        selected = torch.ones(n, dtype=torch.bool, device=updates.device)
        return Aggregate(None, selected, shift.float(), {}, rows=mixed)

    return Rule(apply, f"nnm(f={f})", transform=True, check_rows=check_rows,
                memory=lambda k, d, clients: {**gram_memory("nnm")(k, d, clients), "nnm mixed rows ({k} x {d})": 4 * k * d})
