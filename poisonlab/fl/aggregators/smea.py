"""Smallest maximum eigenvalue averaging, SMEA (Allouah, Guerraoui, Gupta, Pinot and Stephan 2023).

Among all subsets S of n - f rows, the one whose empirical covariance
(1 / |S|) sum_{i in S} (x_i - mean_S)(x_i - mean_S)^T has the smallest largest eigenvalue; the answer
is mean_S. With f < n / 2 some subset is all honest, so the chosen covariance is at most the honest
one in every direction, which bounds how far mean_S can sit from the honest mean (the paper's
(f, kappa)-robustness). The covariance's non-zero eigenvalues are those of the subset's centred
(|S|, |S|) Gram matrix / |S| (taken from the one (n, n) Gram matrix), found as a batched symmetric
eigenvalue problem over a chunk of subsets at once. Exact and exponential: C(n, f) subsets
(subsets.py; refused in one line above max_subsets). Ties go to the first subset in lexicographic
order of the rows left out. Client weights are not used (as in the paper).
selected: the chosen subset; scores: ||x_i - update||.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, distances_to
from poisonlab.fl.aggregators.gram import gram64, gram_memory
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.aggregators.subsets import MAX_SUBSETS, check_subsets, left_out_masks
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Allouah, Guerraoui, Gupta, Pinot and Stephan 2023, On the Privacy-Robustness-Utility Trilemma in"
             " Distributed Learning (ICML), SMEA")


def subset_top_eigenvalues(gram: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(c,) largest covariance eigenvalue of each subset (rows not in out (c, n)), from the (n, n) Gram."""
    c, n = out.shape
    m = n - int(out[0].sum())
    idx = torch.argsort(out.to(torch.int8), dim=1, stable=True)[:, :m]  # the subset's rows, ascending
    g = gram[idx[:, :, None], idx[:, None, :]]  # (c, m, m)
    g = g - g.mean(dim=1, keepdim=True) - g.mean(dim=2, keepdim=True) + g.mean(dim=(1, 2), keepdim=True)
    return torch.linalg.eigvalsh(g)[:, -1] / m


def smallest_eigenvalue_subset(gram: torch.Tensor, f: int) -> tuple[torch.Tensor, float]:
    """(bool (n,) mask of the n - f rows whose covariance has the smallest top eigenvalue, that eigenvalue)."""
    n = gram.shape[0]
    m = n - f
    best, best_mask = float("inf"), torch.ones(n, dtype=torch.bool, device=gram.device)
    chunk = max(1, (64 << 20) // (3 * 8 * m * m))  # (chunk, m, m) float64 blocks of about 64 MiB
    for out in left_out_masks(n, f, gram.device, chunk):
        top = subset_top_eigenvalues(gram, out)
        low = int(torch.argmin(top))
        if float(top[low]) < best:
            best, best_mask = float(top[low]), ~out[low]
    return best_mask, best


@AGGREGATORS.register("smea", reference=REFERENCE)
def smea(f: int = 1, max_subsets: int = MAX_SUBSETS, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """SMEA: the mean of the n - f updates whose covariance has the smallest top eigenvalue (exact search)."""
    f = check_int("smea", "f", f)
    max_subsets = check_int("smea", "max_subsets", max_subsets, low=1)
    chunk_bytes = int(chunk_bytes)

    def check_rows(n: int) -> None:
        check_subsets("smea", n, f, max_subsets)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        chosen, top = smallest_eigenvalue_subset(gram64(updates, chunk_bytes), f)
        update = (chosen.to(updates.dtype) / int(chosen.sum())) @ updates
        return Aggregate(update, chosen, distances_to(updates, update), {"max_eigenvalue": top})

    return Rule(apply, f"smea(f={f})", check_rows=check_rows, memory=gram_memory("smea"))
