"""AutoGM, the auto-weighted geometric median (Li, Ngai and Voigt 2023, as shipped by Blades).

Minimises over v and weights alpha on the simplex
    sum_i alpha_i ||x_i - v|| + (lambda / 2) ||alpha||^2
by alternating: v = the alpha-weighted geometric median (smoothed Weiszfeld, each alternation started
from the last v; every iterate is a convex combination of the rows, so the iterations run on the one
(n, n) Gram matrix, gram.py, and only the answer touches the (n, d) rows); then, with
d_i = ||x_i - v||, the exact alpha step alpha_i = max(eta - d_i, 0) / lambda, eta the water level with
sum alpha_i = 1 (found from the sorted d: eta = (lambda + sum of the p smallest d) / p for the largest
p with eta > d_(p)). Rows farther than eta from the median get weight 0: the larger lambda, the more
rows kept (lambda -> inf gives the plain geometric median). lambda is in the units of the distances.
Starts from alpha = 1/n; stops when the objective changes by less than ftol (relative) or after
max_iter alternations. Note: Blades sorts the distances by row index, not by value, before the water
level; this is the paper's (sorted) solution. Client weights are not used (as in the paper).
selected: alpha_i > 0; scores: 1 - n alpha_i (below 0 for rows weighted above uniform).
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive
from poisonlab.fl.aggregators.gram import gram64, gram_memory
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Li, Ngai and Voigt 2023, Byzantine-Robust Aggregation in Federated Learning Empowered Industrial"
             " IoT (IEEE Transactions on Industrial Informatics), AutoGM")


def simplex_weights(dist: torch.Tensor, lamb: float) -> torch.Tensor:
    """argmin over the simplex of sum_i a_i d_i + lamb / 2 ||a||^2: a_i = max(eta - d_i, 0) / lamb."""
    ordered = torch.sort(dist).values
    p = torch.arange(1, len(dist) + 1, dtype=dist.dtype, device=dist.device)
    eta = (torch.cumsum(ordered, 0) + lamb) / p
    qualifies = eta > ordered
    qualifies[0] = True  # eta_1 = d_(1) + lamb > d_(1), unless lamb is lost in rounding next to a huge d
    alpha = (eta[int(torch.nonzero(qualifies).flatten().max())] - dist).clamp_min(0) / lamb
    total = alpha.sum()
    if not bool(total > 0):  # lamb below the distances' rounding: all weight on the nearest row(s)
        alpha, total = (dist == ordered[0]).to(dist.dtype), (dist == ordered[0]).sum().to(dist.dtype)
    return alpha / total


def gram_distances(gram: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """||x_i - v|| for v = sum_j coef_j x_j (coef on the simplex), from the Gram matrix about any point."""
    g_coef = gram @ coef
    return (gram.diagonal() - 2 * g_coef + coef @ g_coef).clamp_min(0).sqrt()


def weighted_median(gram: torch.Tensor, alpha: torch.Tensor, coef: torch.Tensor, nu: float, max_iter: int,
                    ftol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(coef, ||x_i - v||): the alpha-weighted geometric median v = coef @ x by smoothed Weiszfeld steps
    coef <- b / sum b, b_i = alpha_i / max(nu, ||x_i - v||), run on the (n, n) Gram matrix (every iterate
    is a convex combination of the rows), from the previous alternation's coef, until the objective
    improves by less than ftol."""
    dist = gram_distances(gram, coef)
    value = float((alpha * dist).sum())
    for _ in range(max_iter):
        b = alpha / dist.clamp_min(nu)
        coef = b / b.sum()
        dist = gram_distances(gram, coef)
        new = float((alpha * dist).sum())
        if abs(value - new) <= ftol * max(new, 1e-30):
            break
        value = new
    return coef, dist


def objective(alpha: torch.Tensor, dist: torch.Tensor, lamb: float) -> float:
    return float((alpha * dist).sum() + lamb / 2 * (alpha * alpha).sum())


@AGGREGATORS.register("autogm", reference=REFERENCE)
def autogm(lamb: float = 2.0, max_iter: int = 100, nu: float = 1e-6, ftol: float = 1e-6,
           chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """AutoGM: a geometric median whose simplex weights are learned, dropping rows far from it (lambda)."""
    lamb = check_positive("autogm", "lamb", lamb)
    max_iter = check_int("autogm", "max_iter", max_iter, low=1)
    nu = check_positive("autogm", "nu", nu)
    ftol = check_positive("autogm", "ftol", ftol, allow_zero=True)
    chunk_bytes = check_int("autogm", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        gram = gram64(updates, chunk_bytes)
        alpha = torch.full((n,), 1.0 / n, dtype=torch.float64, device=updates.device)
        coef, dist = weighted_median(gram, alpha, alpha, nu, max_iter, ftol)
        value = objective(alpha, dist, lamb)
        steps = 0
        for steps in range(1, max_iter + 1):
            alpha = simplex_weights(dist, lamb)
            coef, dist = weighted_median(gram, alpha, coef, nu, max_iter, ftol)
            new = objective(alpha, dist, lamb)
            if abs(value - new) <= ftol * max(abs(new), 1e-30):
                break
            value = new
        update = coef.to(updates.dtype) @ updates
        return Aggregate(update, alpha > 0, (1 - n * alpha).float(), {"alternations": steps, "kept": int((alpha > 0).sum())})

    return Rule(apply, f"autogm(lamb={lamb})", memory=gram_memory("autogm"))
