"""Min-max and min-sum (Shejwalkar and Houmansadr, NDSS 2021, "Manipulating the Byzantine").

The malicious update is x = mu + gamma * p with mu the benign mean and p a perturbation
direction: "unit_vec" p = -mu/||mu||, "std" p = -sigma (coordinate-wise std), "sign" p = -sign(mu).
gamma is the largest value (found by the paper's halving search, Algorithm 1) such that
  min_max: max_i ||x - g_i|| <= max_{i,j} ||g_i - g_j||
  min_sum: sum_i ||x - g_i||^2 <= max_i sum_j ||g_i - g_j||^2
over the benign rows g (honest rows if omniscient, the attackers' own otherwise).
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError, check_range
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.types import RoundContext

DIRECTIONS = ("unit_vec", "std", "sign")


def perturbation(ref: torch.Tensor, direction: str) -> torch.Tensor:
    """The perturbation direction p (d,) for benign rows ref (n, d)."""
    mu = ref.mean(dim=0)
    if direction == "unit_vec":
        return -mu / torch.clamp(mu.norm(), min=torch.finfo(mu.dtype).tiny)
    if direction == "std":
        return -ref.std(dim=0, correction=0)
    if direction == "sign":
        return -torch.sign(mu)
    raise ConfigError(f"perturbation '{direction}' is not known; accepted: {', '.join(DIRECTIONS)}")


def sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (len(a), len(b)) via the Gram matrix, clamped at 0."""
    return torch.clamp((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, min=0)


def gamma_search(ok, gamma_init: float = 10.0, tau: float = 1e-5) -> float:
    """Algorithm 1 of Shejwalkar & Houmansadr: halving search for the largest gamma with ok(gamma).

    Start at gamma_init with step gamma_init/2; on success remember gamma and step up, on failure
    step down; halve the step each time; stop when |gamma - last success| <= tau.
    Finds values up to 2 * gamma_init; returns 0 if no tried gamma succeeds.
    """
    gamma, step, success = gamma_init, gamma_init / 2, 0.0
    while abs(success - gamma) > tau:
        if ok(gamma):
            success = gamma
            gamma += step
        else:
            gamma -= step
        step /= 2
    return success


def _criterion(ref: torch.Tensor, p: torch.Tensor, rule: str):
    """ok(gamma) for min_max or min_sum on the benign rows ref (float64)."""
    mu = ref.mean(dim=0)
    pair = sq_distances(ref, ref)
    if rule == "min_max":
        limit = pair.max()
        return lambda g: bool(sq_distances((mu + g * p)[None], ref).max() <= limit)
    limit = pair.sum(dim=1).max()
    return lambda g: bool(sq_distances((mu + g * p)[None], ref).sum() <= limit)


def _factory(rule: str, direction: str, gamma_init: float, tau: float):
    if direction not in DIRECTIONS:
        raise ConfigError(f"perturbation '{direction}' is not known; accepted: {', '.join(DIRECTIONS)}")
    check_range("gamma_init", gamma_init, 0.0, low_open=True)
    check_range("tau", tau, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        ref = benign_rows(updates, malicious, ctx).double()
        p = perturbation(ref, direction)
        gamma = gamma_search(_criterion(ref, p, rule), gamma_init, tau)
        return rewrite(updates, malicious, ref.mean(dim=0) + gamma * p)

    return attack


@ATTACKS.register("min_max", reference="Shejwalkar & Houmansadr 2021, Manipulating the Byzantine (NDSS)")
def min_max(perturbation: str = "std", gamma_init: float = 10.0, tau: float = 1e-5):
    """Min-max: x = mu + gamma p with the largest gamma keeping max_i ||x - g_i|| <= max_{i,j} ||g_i - g_j||."""
    return _factory("min_max", perturbation, gamma_init, tau)


@ATTACKS.register("min_sum", reference="Shejwalkar & Houmansadr 2021, Manipulating the Byzantine (NDSS)")
def min_sum(perturbation: str = "std", gamma_init: float = 10.0, tau: float = 1e-5):
    """Min-sum: x = mu + gamma p with the largest gamma keeping sum_i ||x - g_i||^2 <= max_i sum_j ||g_i - g_j||^2."""
    return _factory("min_sum", perturbation, gamma_init, tau)
