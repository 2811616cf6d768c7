"""Mean around median, Meamed (Xie, Koyejo and Gupta 2018).

Per coordinate j, the mean of the n - f values closest to the coordinate's median:
update_j = mean of the n - f x_ij with smallest |x_ij - median_i x_ij| (ties to the lower row index).
Breakdown point f < n / 2 per coordinate: f values however far cannot move it beyond the range of
the honest ones. Works on column chunks (the mean in float64, so rows near float32's largest value
do not overflow it); ignores client weights (every row counts once, as in the paper). Needs n > 2f.
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
    """Per column of x (n, d), the mean of the q entries closest to the column's median."""
    n, d = x.shape
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    for cols in column_chunks(n, d, 40, chunk_bytes):  # block, gap, sort values and indices
        block = x[:, cols]
        gap = (block.double() - coordinate_median(block, chunk_bytes).double()).abs()
        nearest = torch.sort(gap, dim=0, stable=True).indices[:q]
        out[cols] = torch.gather(block, 0, nearest).double().mean(dim=0).to(x.dtype)
    return out


@AGGREGATORS.register("meamed", reference=REFERENCE)
def meamed(f: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Meamed: per coordinate, the mean of the n - f values closest to the median (needs n > 2f)."""
    f, chunk_bytes = check_int("meamed", "f", f), int(chunk_bytes)

    def check_rows(n: int) -> None:
        if not n > 2 * f:
            raise ConfigError(f"meamed needs n > 2f; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        update = mean_around_median(updates, n - f, chunk_bytes)
        selected = torch.ones(n, dtype=torch.bool, device=updates.device)
        return Aggregate(update, selected, distances_to(updates, update), {})

    return Rule(apply, f"meamed(f={f})", check_rows=check_rows, memory=column_chunks_memory("meamed", chunk_bytes))
