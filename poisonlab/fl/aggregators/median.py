"""Coordinate-wise order statistics: median and trimmed mean (Yin et al. 2018).

Both ignore the client weights (every row counts once, as in the paper) and work on column
chunks so that the selection temporaries stay within ``chunk_bytes``.
selected: all True (every row contributes to some coordinates); scores: ||x_i - update||.

On the CPU both are one selection per column (numpy's introselect, ``np.partition`` with the one or two middle
ranks, or the two trimming ranks): after partitioning a column at ranks a <= b, its positions a..b hold exactly
the values of ranks a..b, so the median is read off and the trimmed mean is the float64 mean of that slice, the
same values a full sort would keep (NaN sorts last in both). The column blocks are transposed to rows (each
column contiguous) and spread over torch's thread count (numpy releases the GIL while it partitions). This is
faster than torch.median/kthvalue on strided columns and than a sort (benchmarks/order_statistics.py). Other
devices select with torch.kthvalue / torch.sort on column chunks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, column_chunks, distances_to
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"


BLOCK_BYTES = 16 * 2**20
"""Bytes of one transposed column block on the CPU path (each worker holds one; larger blocks measured no faster)."""


def coordinate_median(x: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Per-column median of x (k, d); for even k the mean of the two middle values (as numpy)."""
    k, d = x.shape
    lo_rank, hi_rank = (k + 1) // 2, k // 2 + 1  # 1-based ranks of the middle value(s)
    if _numpy_path(x):
        def middle(block: np.ndarray) -> np.ndarray:
            if lo_rank == hi_rank:
                return block[:, lo_rank - 1]
            with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is NaN, as in torch
                return ((block[:, lo_rank - 1].astype(np.float64) + block[:, hi_rank - 1]) / 2).astype(block.dtype)

        return _select_blocks(x, sorted({lo_rank - 1, hi_rank - 1}), middle, chunk_bytes)
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    for cols in column_chunks(k, d, 3 * x.element_size() + 8, chunk_bytes):
        block = x[:, cols]
        lo = torch.kthvalue(block, lo_rank, dim=0).values
        out[cols] = lo if lo_rank == hi_rank else ((lo.double() + torch.kthvalue(block, hi_rank, dim=0).values.double()) / 2).to(x.dtype)
    return out


def coordinate_trimmed_mean(x: torch.Tensor, cut: int, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Per-column mean of x after removing the cut smallest and cut largest values (scipy's trim_mean)."""
    k, d = x.shape
    if _numpy_path(x):
        def kept_mean(block: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN and 1e300 -> float32 inf, as torch
                return block[:, cut:k - cut].mean(axis=1, dtype=np.float64).astype(block.dtype)

        return _select_blocks(x, sorted({cut, k - cut - 1}), kept_mean, chunk_bytes)
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    for cols in column_chunks(k, d, 2 * x.element_size() + 8, chunk_bytes):
        ordered = torch.sort(x[:, cols], dim=0).values
        out[cols] = ordered[cut:k - cut].double().mean(dim=0).to(x.dtype)
    return out


def _numpy_path(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.shape[0] > 0 and x.shape[1] > 0


def _select_blocks(x: torch.Tensor, kth: list[int], reduce, chunk_bytes: int) -> torch.Tensor:
    """reduce(np.partition(block of columns as rows, kth, axis=1)) for every column block of x, the blocks spread
    over torch.get_num_threads() threads; the (d,) results in column order."""
    k, d = x.shape
    a = x.detach().numpy()
    workers = max(1, torch.get_num_threads())
    width = max(1, min(BLOCK_BYTES, int(chunk_bytes) // workers) // (k * a.itemsize))
    out = np.empty(d, dtype=a.dtype)

    def one(start: int) -> None:
        block = np.array(a[:, start:start + width].T, order="C")  # a copy (never x itself), columns as rows
        block.partition(kth, axis=1)
        out[start:start + width] = reduce(block)

    starts = range(0, d, width)
    if workers == 1 or len(starts) == 1:
        for start in starts:
            one(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, starts))
    return torch.from_numpy(out)


def column_chunks_memory(name: str, chunk_bytes: int):
    """memory_parts of a rule whose temporaries are column chunks of at most chunk_bytes."""
    return lambda k, d, clients: {f"{name} column chunks": min(chunk_bytes, 16 * k * d)}


@AGGREGATORS.register("median", reference=REFERENCE)
def median(chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Coordinate-wise median (breakdown point 1/2; for even k the mean of the two middle values).

    update_j = median_i x_ij.
    """
    chunk_bytes = check_int("median", "chunk_bytes", chunk_bytes, 1)

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
    beta, chunk_bytes = float(beta), check_int("trimmed_mean", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k = updates.shape[0]
        cut = int(beta * k)
        update = coordinate_trimmed_mean(updates, cut, chunk_bytes)
        selected = torch.ones(k, dtype=torch.bool, device=updates.device)
        return Aggregate(update, selected, distances_to(updates, update), {"trimmed_per_side": cut})

    return Rule(apply, f"trimmed_mean(beta={beta})", memory=column_chunks_memory("trimmed_mean", chunk_bytes))
