"""A Little Is Enough (Baruch, Baruch and Goldberg, NeurIPS 2019)."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.types import RoundContext

VARIANTS = ("paper", "honest")


def alie_z(n: int, f: int, variant: str = "paper") -> float:
    """z_max for n participants of which f are malicious.

    s = floor(n/2 + 1) - f (honest supporters the attackers need for a majority);
    "paper" (Baruch et al.): z = Phi^-1((n - s) / n);
    "honest" (the form in Shejwalkar & Houmansadr's code and most libraries built on it):
    z = Phi^-1((n - f - s) / (n - f)), counting only the honest workers.
    When the attackers already hold a majority (s < 1), s is taken as 1.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"alie variant '{variant}' is not known; accepted: {', '.join(VARIANTS)}")
    if n < 2 or not 0 <= f < n:
        raise ConfigError(f"alie needs n >= 2 participants and 0 <= f < n malicious; got n={n}, f={f}")
    s = max(math.floor(n / 2 + 1) - f, 1)
    p = (n - s) / n if variant == "paper" else (n - f - s) / (n - f)
    p = min(max(p, 1e-12), 1 - 1e-12)
    return NormalDist().inv_cdf(p)


@ATTACKS.register("alie", reference="Baruch et al. 2019, A Little Is Enough (NeurIPS)")
def alie(z: float | None = None, variant: str = "paper"):
    """ALIE: every malicious row becomes mu - z * sigma, coordinate-wise over the benign rows.

    mu and sigma are the per-coordinate mean and (population) standard deviation of the benign
    rows (honest rows if omniscient, the attackers' own updates otherwise); z defaults to
    alie_z(k, f, variant) with k rows this round and f of them malicious.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"alie variant '{variant}' is not known; accepted: {', '.join(VARIANTS)}")

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        f = int(malicious.sum())
        if f == 0:
            return updates.clone()
        ref = benign_rows(updates, malicious, ctx)
        zz = z if z is not None else alie_z(updates.shape[0], f, variant)
        mu, sigma = ref.mean(dim=0), ref.std(dim=0, correction=0)
        return rewrite(updates, malicious, mu - zz * sigma)

    return attack
