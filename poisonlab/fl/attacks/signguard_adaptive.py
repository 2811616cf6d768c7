"""The attack Blades adapts to SignGuard: a random row with the benign mean's sign statistics and a benign norm."""

from __future__ import annotations

import torch

from poisonlab.errors import check_range
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


def finite_rows(rows: torch.Tensor) -> torch.Tensor:
    """The rows of rows with every entry finite (a NaN or Inf row says nothing about the benign statistics)."""
    return rows[torch.isfinite(rows).all(dim=1)]


def sign_matched(mean: torch.Tensor, norm: float, gen: torch.Generator) -> torch.Tensor:
    """(d,): as many positive, negative and zero entries as mean has, at random coordinates, magnitudes U(0, 1),
    scaled to the given norm (0 when the draw is all zero)."""
    d = mean.numel()
    pos, neg = int((mean > 0).sum()), int((mean < 0).sum())
    signs = torch.cat([torch.ones(pos, device="cpu"), -torch.ones(neg, device="cpu"),
                       torch.zeros(d - pos - neg, device="cpu")]).double()
    row = signs[torch.randperm(d, generator=gen, device="cpu")] * torch.rand(d, generator=gen, device="cpu",
                                                                             dtype=torch.float64)
    length = float(row.norm())
    return row * (norm / length) if length > 0 else row


@ATTACKS.register("signguard_adaptive", reference="Blades (Li et al. 2023) SignGuardAdversary, the attack adapted to"
                  " Xu et al. 2022, SignGuard: Byzantine-robust Federated Learning through Collaborative Malicious"
                  " Gradient Filtering (ICDCS)")
def signguard_adaptive(scale: float = 1.0):
    """SignGuard-adapted attack: a random row with the benign mean's sign counts and the median benign norm.

    Every malicious row is one random vector whose counts of positive, negative and zero coordinates equal
    those of the benign mean, placed at random coordinates (magnitudes U(0, 1)), scaled to norm
    scale * median benign norm.

    SignGuard keeps rows whose norm is within [lower, upper] x the median norm and whose sign fractions
    cluster with the majority's; this row matches both statistics while pointing in a random direction.
    Blades' SignGuardAdversary draws the same row and leaves its magnitudes U(0, 1) unscaled; the norm is
    matched here so that the norm filter passes it at any update scale (scale 1: the median benign norm).
    Benign rows: the honest ones if omniscient, else the attackers' own (finite rows only; with none the
    rows are 0). Drawn from generator(seed, "attack", "signguard_adaptive", round), on the CPU.
    """
    check_range("scale", scale, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        benign = finite_rows(benign_rows(updates, malicious, ctx)).double()
        if len(benign) == 0:
            return rewrite(updates, malicious, torch.zeros(updates.shape[1], device=updates.device))
        norm = scale * float(benign.norm(dim=1).median())
        gen = generator(ctx.seed, "attack", "signguard_adaptive", ctx.round)
        row = sign_matched(benign.mean(dim=0).cpu(), norm, gen)
        return rewrite(updates, malicious, row.to(device=updates.device))

    return attack
