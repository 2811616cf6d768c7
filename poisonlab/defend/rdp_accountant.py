"""The privacy of DP-SGD: Renyi-DP of the sampled Gaussian mechanism, converted to (epsilon, delta).

One DP-SGD step adds N(0, (sigma * C)^2) noise to the sum of per-sample gradients clipped to norm C, over a
batch in which every row is included independently with probability q (Poisson sampling). Its Renyi
divergence of integer order alpha is (Mironov, Talwar & Zhang, "Renyi Differential Privacy of the Sampled
Gaussian Mechanism", 2019, Sec. 3.3)

    eps_alpha = log(A_alpha) / (alpha - 1),
    A_alpha   = sum_{k=0..alpha} binom(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2)),

which is exact for integer orders (q = 1: alpha / (2 sigma^2), the plain Gaussian mechanism). RDP composes
by addition over steps; the (epsilon, delta) guarantee is the smallest over the orders of Balle et al.'s
conversion ("Hypothesis testing interpretations and Renyi differential privacy", AISTATS 2020, Thm. 21)

    epsilon = rdp_alpha + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1).

Only integer orders 2..256 are used: the minimum over a subset of orders is still a valid bound, slightly
looser than accountants that also try fractional orders (opacus, TF Privacy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ORDERS = tuple(range(2, 257))


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    if a == -math.inf:
        return b
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def log_a(q: float, sigma: float, alpha: int) -> float:
    """log A_alpha of the sampled Gaussian mechanism (integer alpha >= 2, 0 < q < 1), by the binomial sum."""
    total = -math.inf
    for k in range(alpha + 1):
        log_binom = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        term = log_binom + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma ** 2)
        total = _log_add(total, term)
    return total


def rdp(q: float, sigma: float, steps: int, orders: Sequence[int] = ORDERS) -> list[float]:
    """RDP epsilon at each order of `steps` compositions of the sampled Gaussian mechanism (inf without noise)."""
    if q < 0 or q > 1:
        raise ValueError(f"sampling rate q={q} is not in [0, 1]")
    out = []
    for alpha in orders:
        if q == 0 or steps == 0:
            out.append(0.0)
        elif sigma == 0:
            out.append(math.inf)
        elif q == 1:
            out.append(steps * alpha / (2 * sigma ** 2))
        else:
            out.append(steps * log_a(q, sigma, int(alpha)) / (alpha - 1))
    return out


def epsilon(rdp_values: Sequence[float], delta: float, orders: Sequence[int] = ORDERS) -> tuple[float, int]:
    """(epsilon, the order that gives it): the (epsilon, delta)-DP of a mechanism with these RDP values."""
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta} is not in (0, 1)")
    best = (math.inf, int(orders[0]))
    for alpha, value in zip(orders, rdp_values):
        eps = value + math.log((alpha - 1) / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        if eps < best[0]:
            best = (eps, int(alpha))
    return (max(best[0], 0.0), best[1])


def dp_sgd_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    """The epsilon of DP-SGD with Poisson sampling rate q, noise multiplier sigma, `steps` steps, at delta."""
    return epsilon(rdp(q, sigma, steps), delta)[0]
