"""Inner product manipulation (Xie, Koyejo and Gupta, UAI 2020, "Fall of empires")."""

from __future__ import annotations

import torch

from poisonlab.errors import check_range
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.types import RoundContext


@ATTACKS.register("ipm", reference="Xie, Koyejo and Gupta 2020, Fall of empires: inner product manipulation (UAI)")
def ipm(epsilon: float = 0.1):
    """IPM: every malicious row becomes -epsilon * mean of the benign rows.

    Small epsilon keeps the rows close to the honest ones (past median / Krum) while making the
    inner product of the aggregate with the true gradient negative once enough rows are malicious.
    Benign rows: the honest ones if omniscient, the attackers' own updates otherwise.
    """
    check_range("epsilon", epsilon, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        return rewrite(updates, malicious, -epsilon * benign_rows(updates, malicious, ctx).mean(dim=0))

    return attack
