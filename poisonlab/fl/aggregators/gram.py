"""Gram matrices and squared distances of the rows that stay finite for any finite input.

The rules that compare rows (NNM, MDA, SMEA, CAF, DnC, MoNNA) need the (k, k) Gram matrix of the rows
about a common point, which is all any translation-invariant quantity needs (distances, covariances).
For ordinary updates it is krum's fast path (base.block_gram: float32 column blocks, centred, summed
in float64). A row with an entry above HUGE (an attacker's 1e30) would overflow the float32 block
products, so such inputs are multiplied in float64 blocks without centring (centring on a mean pulled
to 1e29 would erase the honest rows' differences): slower, only ever on such rounds, never inf.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, block_gram, column_chunks, row_abs_max

HUGE = 1e12
"""Largest entry for the float32 path: d x (2 x 1e12)^2 stays far below float32's 3.4e38 for d <= 1e10."""


def gram64(x: torch.Tensor, chunk_bytes: int = CHUNK_BYTES, precise: bool = False) -> torch.Tensor:
    """(k, k) float64 Gram matrix of the rows about a common point (the column means, or 0 for huge rows).

    precise=True multiplies float64 blocks (5-7x slower at k=100, d=1e6) for a rule that iterates on the
    Gram matrix and would amplify float32 rounding (CAF's passes).
    """
    huge = x.numel() > 0 and float(row_abs_max(x, chunk_bytes=chunk_bytes).max()) > HUGE
    if not huge and not precise:
        return block_gram(x, chunk_bytes, center=True)
    k, d = x.shape
    gram = torch.zeros(k, k, dtype=torch.float64, device=x.device)
    for cols in column_chunks(k, d, 16, min(chunk_bytes, 4 << 20)):
        block = x[:, cols].double()
        if not huge:
            block = block - block.mean(dim=0)
        gram += block @ block.T
    return gram


def gram_sq_distances(gram: torch.Tensor) -> torch.Tensor:
    """(k, k) squared distances ||x_i - x_j||^2 from a Gram matrix: exactly symmetric, 0 on the diagonal."""
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min_(0)
    dist = (dist + dist.T) / 2
    dist.fill_diagonal_(0)
    return dist


def sq_distances(x: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """(k, k) float64 squared Euclidean distances between the rows (finite for any finite x)."""
    return gram_sq_distances(gram64(x, chunk_bytes))


def gram_memory(name: str):
    """memory_parts of a rule holding (k, k) float64 matrices and one column block."""
    return lambda k, d, clients: {f"{name} gram ({{k}} x {{k}})": 3 * 8 * k * k + min(CHUNK_BYTES, 8 * k * d)}
