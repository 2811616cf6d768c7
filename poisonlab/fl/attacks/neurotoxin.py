"""Neurotoxin (Zhang et al., ICML 2022, "Neurotoxin: Durable Backdoors in Federated Learning"), update-level form."""

from __future__ import annotations

import torch

from poisonlab.errors import DataError, check_range
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext


def rare_mask(reference: torch.Tensor, ratio: float) -> torch.Tensor:
    """bool (d,): False on the ceil(ratio * d) coordinates of largest |reference| (the heavily updated
    ones), True on the rest (where the benign clients rarely write, so a backdoor there lasts)."""
    d = reference.numel()
    top = min(d, int(-(-ratio * d // 1)))
    keep = torch.ones(d, dtype=torch.bool, device=reference.device)
    if top > 0:
        keep[torch.topk(reference.abs(), top).indices] = False
    return keep


@ATTACKS.register("neurotoxin", reference="Zhang et al. 2022, Neurotoxin: Durable Backdoors in Federated Learning (ICML)")
def neurotoxin(ratio: float = 0.1):
    """Neurotoxin (approximation): each malicious (backdoor-trained) update is projected onto the rarely
    updated coordinates, x_m' = x_m * mask, mask = rare_mask(reference, ratio).

    reference: ctx.extras["previous_global_update"] (the last round's global update, the paper's
    choice) if given, else the mean of the benign rows this round (honest if omniscient, the
    attackers' own otherwise). The paper projects after every local step (projected gradient
    descent); this projects the finished update once -- an approximation, labelled as such.
    Pair it with a backdoor poison on the same adversary (the rows are its trained updates).
    """
    check_range("ratio", ratio, 0.0, 1.0, high_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        reference = ctx.extras.get("previous_global_update")
        if reference is None:
            reference = benign_rows(updates, malicious, ctx).mean(dim=0)
        reference = torch.as_tensor(reference, device=updates.device).flatten()
        if reference.shape != (updates.shape[1],):
            raise DataError(f"extras['previous_global_update'] has {reference.numel()} values; the model has"
                            f" {updates.shape[1]}")
        return rewrite(updates, malicious, updates[malicious] * rare_mask(reference, ratio).to(updates.dtype))

    return attack
