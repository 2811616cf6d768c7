"""Mean around median, Meamed (Xie, Koyejo and Gupta 2018).

Per coordinate j, the mean of the n - f values closest to the coordinate's median:
update_j = mean of the n - f x_ij with smallest |x_ij - median_i x_ij| (ties to the lower row index).
Breakdown point f < n / 2 per coordinate: f values however far cannot move it beyond the range of
the honest ones. Works on column chunks, by kthvalue and masks (no sort); ignores client weights (every row counts once, as in the paper). Needs n > 2f.
selected: all rows; scores: ||x_i - update||.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, column_chunks, distances_to
from poisonlab.fl.aggregators.median import column_chunks_memory, coordinate_median
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = "Xie, Koyejo and Gupta 2018, Generalized Byzantine-tolerant SGD (arXiv:1802.10116), mean-around-median"


def mean_around_median(x: torch.Tensor, q: int, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Per column of x (n, d), the mean of the q entries closest to the column's median.

    The q-th smallest gap |x_ij - median_j| is found by kthvalue (no sort); every entry below it is kept,
    and of the entries tied at it the lower row indices, until q are kept (the stable-sort choice). The
    kept entries are divided by q before summing, so rows near float32's largest value do not overflow.
    """
    n, d = x.shape
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    for cols in column_chunks(n, d, 4 * x.element_size() + 16, chunk_bytes):  # block, gap, masks, sum
        block = x[:, cols]
        gap = (block - coordinate_median(block, chunk_bytes)).abs()
        edge = torch.kthvalue(gap, q, dim=0).values
        keep = gap < edge
        tied = gap == edge
        keep |= tied & (torch.cumsum(tied, dim=0) <= q - keep.sum(dim=0))
        out[cols] = torch.where(keep, block / q, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=0)
    return out


@AGGREGATORS.register("meamed", reference=REFERENCE)
def meamed(f: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Meamed: per coordinate, the mean of the n - f values closest to the median (needs n > 2f)."""
    f, chunk_bytes = check_int("meamed", "f", f), check_int("meamed", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        if not n > 2 * f:
            raise ConfigError(f"meamed needs n > 2f; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        update = mean_around_median(updates, n - f, chunk_bytes)
        selected = torch.ones(n, dtype=torch.bool, device=updates.device)
        return Aggregate(update, selected, distances_to(updates, update), {})

    return Rule(apply, f"meamed(f={f})", check_rows=check_rows, memory=column_chunks_memory("meamed", chunk_bytes))
