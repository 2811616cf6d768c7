"""Covariance-bound agnostic filter, CAF (Allouah, Guerraoui and Stephan 2025).

Filtering that needs no bound on the honest covariance. Start with weights c_i = 1; while
sum_i c_i > n - 2f: take the weighted mean mu_c and weighted covariance
Sigma_c = sum_i c_i (x_i - mu_c)(x_i - mu_c)^T / sum_i c_i, its top eigenpair (lambda, v), the
projections tau_i = ((x_i - mu_c) . v)^2, and downweight c_i <- c_i (1 - tau_i / max_j tau_j). The
answer is the mu_c of smallest lambda met (the first one is always considered, so f = 0 gives the
mean). The total weight shrinks every pass but may approach n - 2f slowly (the row of largest tau
may be one already at weight 0), so the passes stop at max_passes (info 'capped').
Exact eigenpairs, not ByzFL's one random power step: Sigma_c's non-zero spectrum is that of the
(n, n) matrix diag(sqrt a) K diag(sqrt a), a = c / sum c, K_ij = (x_i - mu_c).(x_j - mu_c), all from
one Gram matrix of float64 products (gram.py, precise: the passes would amplify float32 rounding); then tau_i = ((K diag(sqrt a) u)_i)^2 / lambda. A zero covariance
stops the filter (nothing left to remove). Client weights are not used (as in the paper). Needs n > 2f.
selected: rows of positive weight in the chosen mean; scores: 1 - their weight c_i there.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int
from poisonlab.fl.aggregators.gram import gram64, gram_memory
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Allouah, Guerraoui and Stephan 2025, Towards Trustworthy Federated Learning with Untrusted"
             " Participants (ICML), CAF")


def top_direction(gram: torch.Tensor, c: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(lambda_max of Sigma_c, tau (n,)) for weights c, from the Gram matrix about any common point."""
    a = c / c.sum()
    ga = gram @ a
    centred = gram - ga[:, None] - ga[None, :] + a @ ga  # K_ij = (x_i - mu_c).(x_j - mu_c)
    root = a.sqrt()
    values, vectors = torch.linalg.eigh(root[:, None] * centred * root[None, :])
    lam = float(values[-1])
    if not lam > 0:
        return 0.0, torch.zeros_like(c)
    return lam, (centred @ (root * vectors[:, -1])) ** 2 / lam


def caf_weights(gram: torch.Tensor, f: int, max_passes: int = 1000) -> tuple[torch.Tensor, float, int]:
    """(weights c of the mean with the smallest lambda_max, that lambda, passes run)."""
    n = gram.shape[0]
    c = torch.ones(n, dtype=torch.float64, device=gram.device)
    best_c, best_lam, passes = c, float("inf"), 0
    while passes == 0 or float(c.sum()) > n - 2 * f:
        lam, tau = top_direction(gram, c)
        passes += 1
        if lam < best_lam:
            best_c, best_lam = c, lam
        if lam == 0.0 or passes >= max_passes:
            break
        c = (c * (1 - tau / tau.max())).clamp_min(0)
    return best_c, best_lam, passes


@AGGREGATORS.register("caf", reference=REFERENCE)
def caf(f: int = 1, max_passes: int = 1000, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """CAF: downweight updates along the top covariance direction; the mean of smallest top eigenvalue (n > 2f)."""
    f, chunk_bytes = check_int("caf", "f", f), check_int("caf", "chunk_bytes", chunk_bytes, 1)
    max_passes = check_int("caf", "max_passes", max_passes, low=1)

    def check_rows(n: int) -> None:
        if not n > 2 * f:
            raise ConfigError(f"caf needs n > 2f; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        c, lam, passes = caf_weights(gram64(updates, chunk_bytes, precise=True), f, max_passes)
        update = (c / c.sum()).to(updates.dtype) @ updates
        return Aggregate(update, c > 0, (1 - c).float(),
                         {"max_eigenvalue": lam, "passes": passes, "capped": passes >= max_passes})

    return Rule(apply, f"caf(f={f})", check_rows=check_rows, memory=gram_memory("caf"))
