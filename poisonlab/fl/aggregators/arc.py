"""Adaptive robust clipping, ARC (Allouah et al. 2024), a pre-aggregator.

With c = floor(2 (f / n) (n - f)), the c rows of largest norm are clipped to the norm of the
(c + 1)-th largest: x_i <- x_i min(1, C / ||x_i||), C = that norm. The threshold adapts to the round
(no fixed bound to tune) and only ever touches c <= n / 2 rows; the clipped rows feed the next rule
of a chain (``chain(arc(f=2), krum(f=2))``, the paper's use), alone their weighted mean. Norms are
taken in float64 (exact for any finite row). Needs n > 2f; the client weights are passed on.
selected: rows not clipped; scores: ||x_i|| / C.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import Rule, check_int, row_norms_float64
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Allouah, Guerraoui, Gupta, Jellouli, Rizk and Stephan 2024, The Vital Role of Gradient Clipping"
             " in Byzantine-Resilient Distributed Learning (arXiv:2405.14432; ICLR 2025 as Adaptive Gradient"
             " Clipping for Robust Federated Learning)")


def arc_count(n: int, f: int) -> int:
    """How many rows ARC clips: floor(2 (f / n) (n - f)), in integer arithmetic."""
    return (2 * f * (n - f)) // n


@AGGREGATORS.register("arc", reference=REFERENCE)
def arc(f: int = 1) -> Rule:
    """ARC pre-aggregator: clip the floor(2f(n-f)/n) largest updates to the next largest norm (needs n > 2f)."""
    f = check_int("arc", "f", f)

    def check_rows(n: int) -> None:
        if not n > 2 * f:
            raise ConfigError(f"arc needs n > 2f; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        clipped = arc_count(n, f)
        norms = row_norms_float64(updates)
        bound = torch.sort(norms, descending=True).values[clipped]
        scale = torch.where(norms > bound, bound / norms.clamp_min(1e-300), torch.ones_like(norms))
        scores = norms / bound if bool(bound > 0) else torch.zeros_like(norms)
        return Aggregate(None, norms <= bound, scores.float(), {"clipped": int((norms > bound).sum()), "arc_bound": float(bound)},
                         scale=scale.to(updates.dtype))

    return Rule(apply, f"arc(f={f})", transform=True, check_rows=check_rows)
