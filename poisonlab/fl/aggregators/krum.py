"""Krum and Multi-Krum (Blanchard et al. 2017), and the pairwise distance matrix they share with Bulyan.

score(i) = sum of ||x_i - x_j||^2 over the n - f - 2 rows j != i closest to x_i (n = k rows).
Krum returns the row of lowest score; Multi-Krum the plain mean of the m lowest-scoring rows.
Both need n > 2f + 2 and ignore client weights (as in the paper).
selected: the chosen row(s); scores: the Krum score (higher = more suspicious).
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, block_gram, check_int, one_hot
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent"
             " (NeurIPS)")


def pairwise_sq_distances(x: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """(k, k) squared Euclidean distances from the Gram matrix: ||a||^2 + ||b||^2 - 2 a.b, clamped at 0.

    Columns are centred (distances are translation invariant) to limit float32 cancellation; the
    Gram matrix is built in cache-sized blocks and accumulated in float64 (base.block_gram).
    """
    gram = block_gram(x, chunk_bytes, center=True)
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min_(0)
    dist = (dist + dist.T) / 2  # exactly symmetric, so tied scores compare equal
    dist.fill_diagonal_(0)
    return dist


def krum_scores(dist: torch.Tensor, f: int) -> torch.Tensor:
    """Krum score of every row from the (n, n) squared distance matrix: sum over its n - f - 2 nearest."""
    n = dist.shape[0]
    q = n - f - 2
    if q <= 0:
        return torch.zeros(n, dtype=dist.dtype, device=dist.device)
    off = dist + torch.diag(torch.full((n,), float("inf"), dtype=dist.dtype, device=dist.device))
    return torch.topk(off, q, dim=1, largest=False).values.sum(dim=1)


def check_krum_n(rule: str, n: int, f: int) -> None:
    """Krum's condition n > 2f + 2, as a ConfigError naming rule, n and f."""
    if not n > 2 * f + 2:
        raise ConfigError(f"{rule} needs n > 2f + 2; got n={n}, f={f}")


def distances_memory(name: str):
    """memory_parts of a rule holding the (k, k) float64 Gram and distance matrices and one column block."""
    return lambda k, d, clients: {f"{name} distances ({{k}} x {{k}})": 2 * 8 * k * k + min(CHUNK_BYTES, 4 * k * d)}


def _multi_krum(f: int, m: int, name: str, chunk_bytes: int) -> Rule:
    """Multi-Krum with m rows (Krum is m = 1)."""

    def check_rows(n: int) -> None:
        """ConfigError unless a round of n updates can be aggregated: n > 2f + 2 and m <= n - f."""
        check_krum_n(name, n, f)
        if m > n - f:
            raise ConfigError(f"multi_krum needs 1 <= m <= n - f; got m={m}, n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        scores = krum_scores(pairwise_sq_distances(updates, chunk_bytes), f)
        chosen = torch.sort(scores, stable=True).indices[:m]
        update = updates[chosen[0]].clone() if m == 1 else updates[chosen].mean(dim=0)
        return Aggregate(update, one_hot(len(updates), chosen, updates.device), scores.float(), {"chosen": chosen.tolist()})

    text = f"krum(f={f})" if name == "krum" else f"multi_krum(f={f}, m={m})"
    return Rule(apply, text, check_rows=check_rows, memory=distances_memory(name))


@AGGREGATORS.register("krum", reference=REFERENCE)
def krum(f: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Krum: the update whose n - f - 2 nearest neighbours are closest (needs n > 2f + 2)."""
    return _multi_krum(check_int("krum", "f", f), 1, "krum", check_int("krum", "chunk_bytes", chunk_bytes, 1))


@AGGREGATORS.register("multi_krum", reference=REFERENCE)
def multi_krum(f: int = 1, m: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Multi-Krum: the mean of the m best Krum-scored updates (needs n > 2f + 2, 1 <= m <= n - f)."""
    return _multi_krum(check_int("multi_krum", "f", f), check_int("multi_krum", "m", m, low=1), "multi_krum",
                       check_int("multi_krum", "chunk_bytes", chunk_bytes, 1))
