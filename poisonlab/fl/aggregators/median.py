"""Coordinate-wise order statistics: median and trimmed mean (Yin et al. 2018).

Both ignore the client weights (every row counts once, as in the paper) and work on column
chunks so that the sort temporaries stay within ``chunk_bytes``.
selected: all True (every row contributes to some coordinates); scores: ||x_i - update||.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, column_chunks, distances_to
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"


def coordinate_median(x: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Per-column median of x (k, d); for even k the mean of the two middle values (as numpy)."""
    k, d = x.shape
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    lo_rank, hi_rank = (k + 1) // 2, k // 2 + 1  # 1-based ranks of the middle value(s)
    for cols in column_chunks(k, d, 3 * x.element_size() + 8, chunk_bytes):
        block = x[:, cols]
        lo = torch.kthvalue(block, lo_rank, dim=0).values
        out[cols] = lo if lo_rank == hi_rank else ((lo.double() + torch.kthvalue(block, hi_rank, dim=0).values.double()) / 2).to(x.dtype)
    return out


def coordinate_trimmed_mean(x: torch.Tensor, cut: int, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Per-column mean of x after removing the cut smallest and cut largest values (scipy's trim_mean)."""
    k, d = x.shape
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    for cols in column_chunks(k, d, 2 * x.element_size() + 8, chunk_bytes):
        ordered = torch.sort(x[:, cols], dim=0).values
        out[cols] = ordered[cut:k - cut].double().mean(dim=0).to(x.dtype)
    return out


def column_chunks_memory(name: str, chunk_bytes: int):
    """memory_parts of a rule whose temporaries are column chunks of at most chunk_bytes."""
    return lambda k, d, clients: {f"{name} column chunks": min(chunk_bytes, 16 * k * d)}


@AGGREGATORS.register("median", reference=REFERENCE)
def median(chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Coordinate-wise median (breakdown point 1/2; for even k the mean of the two middle values).

    update_j = median_i x_ij.
    """
    chunk_bytes = int(chunk_bytes)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        update = coordinate_median(updates, chunk_bytes)
        selected = torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device)
        return Aggregate(update, selected, distances_to(updates, update), {})

    return Rule(apply, "median()", memory=column_chunks_memory("median", chunk_bytes))


@AGGREGATORS.register("trimmed_mean", reference=REFERENCE)
def trimmed_mean(beta: float = 0.1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Coordinate-wise beta-trimmed mean: drop int(beta*k) values from each end, average the rest.

    update_j = mean of x_(c+1)j .. x_(k-c)j, c = int(beta * k) (sorted per coordinate).
    """
    try:
        ok = 0 <= float(beta) < 0.5
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"trimmed_mean needs 0 <= beta < 0.5; got beta={beta!r}")
    beta, chunk_bytes = float(beta), int(chunk_bytes)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k = updates.shape[0]
        cut = int(beta * k)
        update = coordinate_trimmed_mean(updates, cut, chunk_bytes)
        selected = torch.ones(k, dtype=torch.bool, device=updates.device)
        return Aggregate(update, selected, distances_to(updates, update), {"trimmed_per_side": cut})

    return Rule(apply, f"trimmed_mean(beta={beta})", memory=column_chunks_memory("trimmed_mean", chunk_bytes))
