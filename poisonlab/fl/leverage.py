"""Leverage math: how far one client, or s sybils, can move an aggregate.

Plain functions on numbers or tensors, used by the docs, the tests and the tutorial.
"""

from __future__ import annotations

import math

import torch

from poisonlab.errors import ConfigError


def _count(name: str, value: int, low: int = 0) -> int:
    if int(value) != value or value < low:
        raise ConfigError(f"{name}={value!r} is invalid; accepted: an integer >= {low}")
    return int(value)


def mean_shift(old, new, num_clients: int):
    """Shift of an unweighted mean of K values when one client reports new instead of old: (new - old) / K."""
    return (new - old) / _count("num_clients", num_clients, 1)


def clipped_shift_bound(bound: float, num_clients: int) -> float:
    """Largest shift of the mean one client can cause when every update is clipped to norm B: 2B / K.

    Its honest update and its replacement both lie in the ball of radius B, so they differ by at most 2B.
    """
    if bound < 0:
        raise ConfigError(f"bound={bound!r} is invalid; accepted: a number >= 0")
    return 2.0 * bound / _count("num_clients", num_clients, 1)


def replacement_update(target, others, weights=None, server_lr: float = 1.0, global_value=0.0):
    """Model-replacement update (Bagdasaryan et al. 2020) for a scalar or a vector, one attacker.

    others: the other clients' updates, shape (K-1,) for scalars or (K-1, d). With weights None
    (equal, a_k = 1/K): x_m = K (target - G)/eta - sum others. With weights (K,), the attacker's last:
    x_m = ((target - G)/eta - sum_{k != m} a_k x_k) / a_m, a normalised to sum 1.
    """
    others = torch.as_tensor(others, dtype=torch.float64)
    goal = (torch.as_tensor(target, dtype=torch.float64) - torch.as_tensor(global_value, dtype=torch.float64)) / server_lr
    k = others.shape[0] + 1
    if weights is None:
        return k * goal - others.sum(dim=0)
    a = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if a.shape != (k,) or bool((a < 0).any()) or float(a[-1]) <= 0:
        raise ConfigError(f"weights must be {k} non-negative numbers (the attacker's last, > 0); got {a.tolist()}")
    a = a / a.sum()
    others_sum = (a[:-1].reshape(-1, *([1] * (others.dim() - 1))) * others).sum(dim=0)
    return (goal - others_sum) / a[-1]


def sybil_weight(sybils: int, num_clients: int) -> float:
    """Share of an unweighted mean held by s sybil identities among K clients: s / K."""
    return _count("sybils", sybils) / _count("num_clients", num_clients, 1)


def sybils_to_control_median(honest: int, lower: bool = False) -> int:
    """Fewest sybils that can place the coordinate-wise median anywhere (breakdown point 1/2).

    With h honest values, s = h sybils suffice for the median that averages the two middle values
    of an even count (numpy); the lower median (torch.median) needs s = h + 1.
    """
    h = _count("honest", honest, 1)
    return h + 1 if lower else h


def sybils_to_control_trimmed_mean(honest: int, beta: float) -> int:
    """Fewest sybils s with s > floor(beta * (h + s)): then one sybil value survives trimming
    floor(beta * n) values from each end, and the trimmed mean is unbounded."""
    h = _count("honest", honest, 1)
    if not 0 <= beta < 0.5:
        raise ConfigError(f"beta={beta!r} is invalid; accepted: 0 <= beta < 0.5")
    s = 1
    while s <= math.floor(beta * (h + s)):
        s += 1
    return s


def sybils_to_control_krum(honest: int, f: int | None = None) -> int:
    """Fewest identical sybils that make Krum (Blanchard et al. 2017) select an arbitrarily far vector.

    Krum scores each of the n = h + s rows by the sum of squared distances to its m = n - f - 2
    nearest others. s identical copies at distance R -> infinity win iff s - 1 >= m (their score is 0),
    or s > h (each copy counts m - s + 1 far terms of order R^2, each honest row m - h + 1), or
    s = h = m (one far term each; the copy's is the smallest of them and honest rows add their own).
    f is the server's assumed Byzantine count; None uses the most Krum tolerates, floor((n - 3)/2).
    """
    h = _count("honest", honest, 1)
    if f is not None:
        _count("f", f)
    for s in range(1, 4 * h + 8):
        n = h + s
        ff = (n - 3) // 2 if f is None else f
        m = n - ff - 2
        if m >= 1 and (s >= m + 1 or s >= h + 1 or s == h == m):
            return s
    raise ConfigError(f"no sybil count up to {4 * h + 7} controls Krum with h={h}, f={f}")
