"""FedAvg: the weighted mean of the updates (McMahan et al. 2017)."""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators import register
from poisonlab.fl.aggregators.base import check_updates, weighted_mean
from poisonlab.fl.types import Aggregate, RoundContext


class Mean:
    """update = sum_i w_i x_i / sum_i w_i. selected: rows with w_i > 0; scores: None."""

    def __repr__(self) -> str:
        return "mean()"

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        check_updates(updates, weights)
        return Aggregate(weighted_mean(updates, weights), weights > 0, None, {})


@register("mean", reference="McMahan et al. 2017, Communication-Efficient Learning of Deep Networks"
                            " from Decentralized Data (FedAvg)")
def mean() -> Mean:
    """FedAvg: the client-weighted mean of the updates (not robust: one row moves it arbitrarily)."""
    return Mean()
