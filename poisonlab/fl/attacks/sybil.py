"""Sybil amplification: one adversary, s identities submitting one coordinated update."""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError, check_range
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


@ATTACKS.register("sybil", reference="Douceur 2002, The Sybil attack; Fung et al. 2020 (FoolsGold), sybils in FL")
def sybil(attack: str | None = None, params: dict | None = None, jitter: float = 0.0):
    """Sybils: all s malicious rows submit the adversary's one update u (+ jitter * N(0, I) each).

    u is the mean of the malicious rows after the inner attack (get(attack, **params)), or the
    mean of their own updates when attack is None; s identities carry s/k of an unweighted mean.
    Jitter (drawn from generator(seed, "attack", "sybil", round)) makes the copies not identical.
    """
    check_range("jitter", jitter, 0.0)
    if attack == "sybil":
        raise ConfigError("sybil cannot wrap itself; accepted inner attacks: any other attack name")
    inner = None
    if attack is not None:
        inner = ATTACKS.get(attack, **(params or {}))
    elif params:
        raise ConfigError("sybil params given without an inner attack; set attack to an attack name")

    def run(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        s = int(malicious.sum())
        if s == 0:
            return updates.clone()
        crafted = inner(updates, malicious, ctx) if inner is not None else updates
        rows = crafted[malicious].mean(dim=0).expand(s, -1)
        if jitter > 0:
            g = generator(ctx.seed, "attack", "sybil", ctx.round)
            noise = torch.randn(s, updates.shape[1], generator=g, dtype=updates.dtype, device="cpu")  # drawn on the CPU
            rows = rows + jitter * noise.to(updates.device)
        return rewrite(updates, malicious, rows)

    return run
