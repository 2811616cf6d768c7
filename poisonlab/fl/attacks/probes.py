"""Probe and free-rider updates: all +inf (a robustness probe) and the zero update (a lazy worker)."""

from __future__ import annotations

import torch

from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext


@ATTACKS.register("inf", reference="Robustness probe of ByzFL / FLPoison: every coordinate +inf")
def inf():
    """Inf: every malicious row is +inf in every coordinate (a rule must drop or guard it, never average it)."""

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        return rewrite(updates, malicious, torch.full((updates.shape[1],), float("inf"), dtype=updates.dtype,
                                                      device=updates.device))

    return attack


@ATTACKS.register("zero", reference="Lin et al. 2019, Free-riders in federated learning (lazy worker, zero update)")
def zero():
    """Zero update: every malicious row is 0, a lazy worker / free rider that trains nothing but is counted.

    Under an unweighted mean it shrinks the aggregate by the malicious fraction; it passes norm and
    distance filters that look for large rows.
    """

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        return rewrite(updates, malicious, torch.zeros(updates.shape[1], dtype=updates.dtype, device=updates.device))

    return attack
