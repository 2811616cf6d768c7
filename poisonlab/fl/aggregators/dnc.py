"""Divide and conquer, DnC (Shejwalkar and Houmansadr 2021).

For each of `iterations` passes: draw b random coordinates (generator(seed, "dnc", round, pass),
without replacement; all of them if b >= d), centre the rows' sub-vectors on their mean, take the
top right singular vector v of that centred (n, b) matrix and score each row by its squared
projection s_i = ((x_i - mean) . v)^2; the int(c f) highest-scoring rows are removed. The rows that
survive every pass are averaged (client-weighted). The top singular pair comes from the (n, n)
centred Gram matrix of the sub-vectors (eigh in float64: s_i = lambda u_i^2), never a (b, b) matrix.
An attack must hide along the direction of largest variance to survive, where it then cannot move
the mean far (the paper's argument). Needs n > c f.
selected: the surviving rows; scores: the largest s_i / lambda over the passes (a row's share of
the top direction, in [0, 1]).
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import Rule, check_int, check_positive, normalized
from poisonlab.fl.aggregators.gram import gram64
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Shejwalkar and Houmansadr 2021, Manipulating the Byzantine: Optimizing Model Poisoning Attacks and"
             " Defenses for Federated Learning (NDSS), DnC")


def top_share(sub: torch.Tensor) -> torch.Tensor:
    """(n,) float64 squared projection of each centred row of sub (n, b) on the top right singular vector,
    divided by the top eigenvalue lambda (= u_i^2; zeros if the rows are all equal)."""
    values, vectors = torch.linalg.eigh(gram64(sub))
    if not float(values[-1]) > 0:
        return torch.zeros(sub.shape[0], dtype=torch.float64, device=sub.device)
    return vectors[:, -1] ** 2


@AGGREGATORS.register("dnc", reference=REFERENCE)
def dnc(f: int = 1, iterations: int = 1, b: int = 10_000, c: float = 1.0) -> Rule:
    """DnC: drop the int(c*f) updates most aligned with the top singular direction of b random coordinates."""
    f = check_int("dnc", "f", f)
    iterations = check_int("dnc", "iterations", iterations, low=1)
    b = check_int("dnc", "b", b, low=1)
    c = check_positive("dnc", "c", c, allow_zero=True)
    removed = int(c * f)

    def check_rows(n: int) -> None:
        if not n > removed:
            raise ConfigError(f"dnc needs n > int(c * f); got n={n}, c={c}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, d = updates.shape
        good = torch.ones(n, dtype=torch.bool, device=updates.device)
        share = torch.zeros(n, dtype=torch.float64, device=updates.device)
        for it in range(iterations):
            cols = torch.randperm(d, generator=generator(ctx.seed, "dnc", ctx.round, it), device="cpu")[:b]
            s = top_share(updates[:, torch.sort(cols).values.to(updates.device)])
            share = torch.maximum(share, s)
            if removed:
                good[torch.sort(s, descending=True, stable=True).indices[:removed]] = False
        update = normalized(weights * good).to(updates.dtype) @ updates
        return Aggregate(update, good, share.float(), {"removed": int((~good).sum())})

    return Rule(apply, f"dnc(f={f}, iterations={iterations}, b={b}, c={c})", check_rows=check_rows,
                memory=lambda k, d, clients: {"dnc sub-vectors ({k} x b)": 4 * k * min(b, d) * 2})
