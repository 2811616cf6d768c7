"""Geometric median of group means (Chen, Su and Xu 2017, "Byzantine gradient descent").

Each round the n rows are split into `groups` random groups of sizes differing by at most one
(a random order keyed by client id, generator(seed, "gm_of_means", round): see groups.py); each
group's client-weighted mean is taken, and the answer is the geometric median of the group means,
weighted by the groups' total weights (smoothed Weiszfeld, geometric_median.weiszfeld). Averaging
first shrinks the honest spread; f attackers spoil at most f groups, so the rule tolerates f < groups / 2.
Needs n >= groups. selected: all rows; scores: ||x_i - update||; info: the group of each row.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, distances_to, empty, normalized
from poisonlab.fl.aggregators.geometric_median import weiszfeld
from poisonlab.fl.aggregators.groups import group_means, random_order
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Chen, Su and Xu 2017, Distributed Statistical Machine Learning in Adversarial Settings: Byzantine"
             " Gradient Descent (POMACS), geometric median of means")


def group_of_rows(n: int, groups: int, ctx: RoundContext, device: torch.device) -> torch.Tensor:
    """(n,) long: each row's group, position in this round's random order * groups // n (sizes differ by <= 1)."""
    group = torch.empty(n, dtype=torch.long, device=device)
    group[random_order(ctx, n, "gm_of_means", device)] = torch.arange(n, device=device) * groups // n
    return group


@AGGREGATORS.register("gm_of_means", reference=REFERENCE)
def gm_of_means(groups: int = 3, nu: float = 1e-6, max_iter: int = 100, ftol: float = 1e-6,
                chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Geometric median of the means of `groups` random groups of updates (needs n >= groups)."""
    groups = check_int("gm_of_means", "groups", groups, low=1)
    nu = check_positive("gm_of_means", "nu", nu)
    max_iter = check_int("gm_of_means", "max_iter", max_iter, low=1)
    ftol = check_positive("gm_of_means", "ftol", ftol, allow_zero=True)
    chunk_bytes = check_int("gm_of_means", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        if n < groups:
            raise ConfigError(f"gm_of_means needs n >= groups; got n={n}, groups={groups}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        group = group_of_rows(n, groups, ctx, updates.device)
        means, totals = group_means(updates, weights, group, groups)
        w = normalized(totals)
        if not bool(w.sum() > 0):
            return empty(updates)
        v, _, steps = weiszfeld(means, w, nu, max_iter, ftol, chunk_bytes)
        selected = torch.ones(n, dtype=torch.bool, device=updates.device)
        return Aggregate(v, selected, distances_to(updates, v), {"group": group.tolist(), "weiszfeld_iterations": steps})

    return Rule(apply, f"gm_of_means(groups={groups})", check_rows=check_rows,
                memory=lambda k, d, clients: {"gm_of_means group means (groups x {d})": 4 * groups * d})
