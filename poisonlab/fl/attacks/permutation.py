"""Permutation: each attacker sends its own honest update with its coordinates shuffled."""

from __future__ import annotations

import torch

from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


@ATTACKS.register("permutation", reference="Permutation (coordinate-shuffle) attack: a norm- and value-preserving"
                  " random direction; cf. Xu et al. 2022 (SignGuard) on sign statistics, Blades' SignGuard attack")
def permutation():
    """Permutation: x_m' = P_m x_m, the attacker's own honest update with its d coordinates permuted.

    Each malicious row gets its own uniformly random permutation P_m (argsort of an (m, d) uniform draw
    from generator(seed, "attack", "permutation", round), on the CPU). The row keeps its norm and the
    multiset of its values (so its sign fractions and every norm or value statistic), while its direction
    is random: filters that look only at norms, magnitudes or sign statistics pass it; its expected inner
    product with any fixed vector is mean(x_m) * sum(v), about 0. Needs no honest row.
    """

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        m, d = int(malicious.sum()), updates.shape[1]
        if m == 0:
            return updates.clone()
        keys = torch.rand(m, d, generator=generator(ctx.seed, "attack", "permutation", ctx.round), device="cpu")
        order = keys.argsort(dim=1).to(updates.device)
        return rewrite(updates, malicious, torch.gather(updates[malicious], 1, order))

    return attack
