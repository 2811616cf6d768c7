"""Random groups of rows, drawn per round and keyed by client id (bucketing, geometric median of means).

A round's order is a random key per client id from generator(seed, purpose, round): the rows sorted by
their clients' keys. The groups are therefore uniformly random each round, the same for the same seed,
and do not depend on the order the rows arrive in (a permuted input gives the same groups).
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import client_ids
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


def random_order(ctx: RoundContext, k: int, purpose: str, device: torch.device) -> torch.Tensor:
    """(k,) row indices in a random order keyed by client id (one uniform key per id, drawn on the CPU)."""
    ids = client_ids(ctx, k).cpu()
    n = max(int(ctx.num_clients), int(ids.max()) + 1 if k else 0)
    keys = torch.rand(n, generator=generator(ctx.seed, purpose, ctx.round), dtype=torch.float64, device="cpu")[ids]
    return torch.argsort(keys, stable=True).to(device)


def group_means(x: torch.Tensor, weights: torch.Tensor, group: torch.Tensor, m: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(means (m, d), totals (m,)): each group's weighted mean (plain mean if its weights sum to 0) and
    its total weight, as one (m, k) @ (k, d) product (no (k, d) temporary)."""
    k = x.shape[0]
    w = weights.to(torch.float64)
    member = torch.zeros(m, k, dtype=torch.float64, device=x.device)
    member[group, torch.arange(k, device=x.device)] = 1.0
    totals = member @ w
    coef = torch.where(totals[:, None] > 0, member * w[None, :] / totals.clamp_min(1e-300)[:, None],
                       member / member.sum(dim=1, keepdim=True).clamp_min(1))
    return coef.to(x.dtype) @ x, totals.to(weights.dtype)
