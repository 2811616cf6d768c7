"""Smallest maximum eigenvalue averaging, SMEA (Allouah, Guerraoui, Gupta, Pinot and Stephan 2023).

Among all subsets S of n - f rows, the one whose empirical covariance
(1 / |S|) sum_{i in S} (x_i - mean_S)(x_i - mean_S)^T has the smallest largest eigenvalue; the answer
is mean_S. With f < n / 2 some subset is all honest, so the chosen covariance is at most the honest
one in every direction, which bounds how far mean_S can sit from the honest mean (the paper's
(f, kappa)-robustness). The covariance's non-zero eigenvalues are those of the subset's centred
(|S|, |S|) Gram matrix / |S| (taken from the one (n, n) Gram matrix), found as a batched symmetric
eigenvalue problem over a chunk of subsets at once, and only for the subsets whose lower bound (their
variance along the full set's top principal directions) does not already exceed the best value found.
Exact and exponential: C(n, f) subsets
(subsets.py; refused in one line above max_subsets). Ties go to the first subset in lexicographic
order of the rows left out. Client weights are not used (as in the paper).
selected: the chosen subset; scores: ||x_i - update||.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, distances_to
from poisonlab.fl.aggregators.gram import gram64, gram_memory
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.aggregators.subsets import MAX_SUBSETS, check_subsets
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Allouah, Guerraoui, Gupta, Pinot and Stephan 2023, On the Privacy-Robustness-Utility Trilemma in"
             " Distributed Learning (ICML), SMEA")


def left_out_sets(n: int, f: int, device: torch.device) -> torch.Tensor:
    """(C(n, f), f) long: every set of f rows left out, in lexicographic order."""
    if f == 0:
        return torch.zeros(1, 0, dtype=torch.long, device=device)
    return torch.combinations(torch.arange(n, device=device), r=f)


def subset_masks(n: int, out: torch.Tensor) -> torch.Tensor:
    """bool (c, n): True at the rows of each subset (all rows but those in out (c, f))."""
    mask = torch.ones(out.shape[0], n, dtype=torch.bool, device=out.device)
    if out.shape[1]:
        mask[torch.arange(out.shape[0], device=out.device)[:, None], out] = False
    return mask


def principal_coordinates(gram: torch.Tensor, directions: int = 8) -> torch.Tensor:
    """(n, directions) the rows' coordinates along the top eigenvectors of their Gram matrix (G = U L U^T:
    the rows are U sqrt(L) in an orthonormal basis of their span)."""
    values, vectors = torch.linalg.eigh(gram)
    return vectors[:, -directions:] * values[-directions:].clamp_min(0).sqrt()


def lower_bounds(top: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(c,) a lower bound on each subset's top covariance eigenvalue: the largest variance of the subset's
    rows along the principal directions `top` (a Rayleigh quotient never exceeds the top eigenvalue)."""
    w = inside.to(torch.float64) / inside.sum(dim=1, keepdim=True)
    return (w @ top ** 2 - (w @ top) ** 2).amax(dim=1)


def subset_top_eigenvalues(gram: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(c,) largest covariance eigenvalue of each subset (bool (c, n) rows inside), from the (n, n) Gram."""
    m = int(inside[0].sum())
    idx = torch.argsort((~inside).to(torch.int8), dim=1, stable=True)[:, :m]  # the subset's rows, ascending
    g = gram[idx[:, :, None], idx[:, None, :]]  # (c, m, m)
    g = g - g.mean(dim=1, keepdim=True) - g.mean(dim=2, keepdim=True) + g.mean(dim=(1, 2), keepdim=True)
    return torch.linalg.eigvalsh(g)[:, -1] / m


def smallest_eigenvalue_subset(gram: torch.Tensor, f: int) -> tuple[torch.Tensor, float, int]:
    """(bool (n,) mask of the n - f rows whose covariance has the smallest top eigenvalue, that eigenvalue,
    how many subsets needed their exact eigenvalue).

    Every subset gets a cheap lower bound first (lower_bounds); exact eigenvalues are then computed in
    chunks in order of increasing bound, stopping at the first chunk whose bounds all exceed the best
    exact value found: no subset that could win is skipped. Ties go to the first subset in
    lexicographic order of the rows left out.
    """
    n = gram.shape[0]
    m = n - f
    out = left_out_sets(n, f, gram.device)
    top = principal_coordinates(gram)
    bound = torch.cat([lower_bounds(top, subset_masks(n, part)) for part in out.split(8192)])
    order = torch.argsort(bound, stable=True)
    chunk = max(1, (64 << 20) // (3 * 8 * m * m))  # (chunk, m, m) float64 blocks of about 64 MiB
    best, best_at, exact = float("inf"), 0, 0
    for part in order.split(chunk):
        if float(bound[part[0]]) > best * (1 + 1e-9):
            break
        top = subset_top_eigenvalues(gram, subset_masks(n, out[part]))
        exact += len(part)
        for value, at in sorted(zip(top.tolist(), part.tolist())):
            if value < best or (value == best and at < best_at):
                best, best_at = value, at
    return subset_masks(n, out[best_at:best_at + 1])[0], best, exact


@AGGREGATORS.register("smea", reference=REFERENCE)
def smea(f: int = 1, max_subsets: int = MAX_SUBSETS, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """SMEA: the mean of the n - f updates whose covariance has the smallest top eigenvalue (exact search)."""
    f = check_int("smea", "f", f)
    max_subsets = check_int("smea", "max_subsets", max_subsets, low=1)
    chunk_bytes = check_int("smea", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        check_subsets("smea", n, f, max_subsets)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        chosen, top, exact = smallest_eigenvalue_subset(gram64(updates, chunk_bytes), f)
        update = (chosen.to(updates.dtype) / int(chosen.sum())) @ updates
        return Aggregate(update, chosen, distances_to(updates, update), {"max_eigenvalue": top, "exact_subsets": exact})

    return Rule(apply, f"smea(f={f})", check_rows=check_rows, memory=gram_memory("smea"))
