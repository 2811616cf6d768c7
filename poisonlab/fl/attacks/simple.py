"""Simple crafted updates: sign flip, Gaussian noise, scaling (boosting)."""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError, check_range
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


@ATTACKS.register("sign_flip", reference="Damaskinos et al. 2018 / Li et al. 2019 (RSA): reversed gradient")
def sign_flip(c: float = 1.0):
    """Sign flip: each malicious row becomes -c times its own honest update, x_m' = -c * x_m.

    Needs no knowledge of the honest rows.
    """
    check_range("c", c, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        return rewrite(updates, malicious, -c * updates[malicious])

    return attack


@ATTACKS.register("gaussian", reference="Blanchard et al. 2017 (Krum), Gaussian Byzantine vectors")
def gaussian(sigma: float | None = None, mean: str | float = "zero"):
    """Gaussian noise: x_m' = m + sigma * N(0, I_d), a fresh draw per malicious row.

    sigma None matches the benign norm: sigma = mean_i ||g_i|| / sqrt(d) over the benign rows
    (honest rows if omniscient, the attackers' own otherwise), so E||noise|| is about that norm.
    mean "zero" gives pure noise (m = 0); mean "own" adds the noise to the row's own update; a number
    mu gives N(mu, sigma^2) in every coordinate (m = mu * 1, ByzFL's Gaussian attack with a non-zero mean).
    Noise comes from poisonlab.rng.generator(seed, "attack", "gaussian", round).
    """
    if sigma is not None:
        check_range("sigma", sigma, 0.0)
    numeric = isinstance(mean, (int, float)) and not isinstance(mean, bool)
    if numeric:
        check_range("mean", float(mean), float("-inf"), float("inf"), low_open=True, high_open=True)
    elif mean not in ("zero", "own"):
        raise ConfigError(f"gaussian mean={mean!r} is not known; accepted: zero, own or a finite number")

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        m, d = int(malicious.sum()), updates.shape[1]
        if m == 0:
            return updates.clone()
        scale = sigma
        if scale is None:
            scale = float(benign_rows(updates, malicious, ctx).norm(dim=1).mean()) / d ** 0.5
        noise = torch.randn(m, d, generator=generator(ctx.seed, "attack", "gaussian", ctx.round),
                            dtype=updates.dtype, device="cpu").to(updates.device) * scale  # drawn on the CPU
        base = updates[malicious] if mean == "own" else torch.full_like(noise, float(mean) if numeric else 0.0)
        return rewrite(updates, malicious, base + noise)

    return attack


@ATTACKS.register("scale", reference="Bhagoji et al. 2019 (explicit boosting); Bagdasaryan et al. 2020")
def scale(gamma: float = 10.0):
    """Scaling (boosting): x_m' = gamma * x_m, so the row weighs gamma times more in a mean."""
    check_range("gamma", gamma, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        return rewrite(updates, malicious, gamma * updates[malicious])

    return attack
