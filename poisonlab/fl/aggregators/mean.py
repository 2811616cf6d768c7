"""FedAvg: the weighted mean of the updates (McMahan et al. 2017)."""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import Rule, weighted_mean
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext


@AGGREGATORS.register("mean", reference="McMahan et al. 2017, Communication-Efficient Learning of Deep Networks"
                                        " from Decentralized Data (FedAvg)")
def mean() -> Rule:
    """FedAvg: the client-weighted mean of the updates (not robust: one row moves it arbitrarily).

    update = sum_i w_i x_i / sum_i w_i. selected: rows with w_i > 0; scores: None.
    """

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        return Aggregate(weighted_mean(updates, weights), weights > 0)

    return Rule(apply, "mean()")
