"""Bucketing (Karimireddy, He and Jaggi 2022), a pre-aggregator: average random buckets of s rows.

Each round the k rows are put in a random order (keyed by client id, generator(seed, "bucketing",
round): see groups.py) and cut into ceil(k / s) consecutive buckets of s rows (the last one holds
the k mod s left over, as in ByzFL); each bucket becomes one row, the weighted mean of its members,
with their total weight. Composed as ``chain(bucketing(s=2), krum(f=1))`` the rule after it sees
the buckets; alone it answers their weighted mean (= the clients' weighted mean). Averaging s rows
shrinks the honest spread (heterogeneity) by sqrt(s) while f attackers spoil at most f buckets.
selected: all rows (every row enters one bucket); scores: None; info: the bucket of each row.
"""

from __future__ import annotations

import math

import torch

from poisonlab.fl.aggregators.base import Rule, check_int
from poisonlab.fl.aggregators.groups import group_means, random_order
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Karimireddy, He and Jaggi 2022, Byzantine-Robust Learning on Heterogeneous Datasets via"
             " Bucketing (ICLR)")


def bucket_of_rows(k: int, s: int, ctx: RoundContext, device: torch.device) -> torch.Tensor:
    """(k,) long: the bucket of each row (position in this round's random order // s)."""
    bucket = torch.empty(k, dtype=torch.long, device=device)
    bucket[random_order(ctx, k, "bucketing", device)] = torch.arange(k, device=device) // s
    return bucket


@AGGREGATORS.register("bucketing", reference=REFERENCE)
def bucketing(s: int = 2) -> Rule:
    """Bucketing pre-aggregator: the means of random buckets of s updates feed the next rule of a chain."""
    s = check_int("bucketing", "s", s, low=1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k = updates.shape[0]
        m = math.ceil(k / s)
        bucket = bucket_of_rows(k, s, ctx, updates.device)
        means, totals = group_means(updates, weights, bucket, m)
        selected = torch.ones(k, dtype=torch.bool, device=updates.device)
        return Aggregate(None, selected, None, {"bucket": bucket.tolist()}, rows=means, weights=totals)

    return Rule(apply, f"bucketing(s={s})", transform=True, rows_out=lambda n: math.ceil(n / s),
                memory=lambda k, d, clients: {"bucketing means ({k} x {d} / s)": 4 * math.ceil(k / s) * d})
