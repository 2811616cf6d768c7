"""Mimic (Karimireddy, He and Jaggi, ICLR 2022, "Byzantine-robust learning on heterogeneous datasets via bucketing")."""

from __future__ import annotations

import torch

from poisonlab.errors import DataError, check_range
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext


def mimic_target(ref: torch.Tensor, iterations: int = 20) -> int:
    """The index of the benign row that stretches the benign spread most: argmax_i |(x_i - mu) . z|,
    z the top principal direction of the centred rows ref - mu (power iteration from the all-ones
    direction, iterations steps; deterministic). The paper estimates z over warm-up rounds; this
    is the same criterion from the current round alone.
    """
    centred = ref - ref.mean(dim=0)
    z = torch.ones(ref.shape[1], dtype=ref.dtype, device=ref.device)
    for _ in range(iterations):  # power iteration on centred^T centred, a loop over steps (not clients)
        z = centred.T @ (centred @ z)
        z = z / torch.clamp(z.norm(), min=torch.finfo(z.dtype).tiny)
    return int((centred @ z).abs().argmax())


@ATTACKS.register("mimic", reference="Karimireddy, He and Jaggi 2022, Byzantine-robust learning on heterogeneous"
                  " datasets via bucketing (ICLR)")
def mimic(target: int | None = None):
    """Mimic: every malicious row copies one benign row, over-representing that client's data.

    target: the index among the benign rows (honest rows if omniscient, else the attackers' own,
    in row order); None picks mimic_target (the row farthest along the top principal direction).
    A copy is a valid honest update, so no outlier filter can drop it, yet the aggregate is
    biased towards that client (harmful on non-iid data).
    """
    if target is not None:
        check_range("target", target, 0)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        ref = benign_rows(updates, malicious, ctx)
        if target is not None and int(target) >= len(ref):
            raise DataError(f"mimic target={target} but the attacker sees {len(ref)} benign rows; accepted: 0..{len(ref) - 1}")
        i = mimic_target(ref.double()) if target is None else int(target)
        return rewrite(updates, malicious, ref[i])

    return attack
