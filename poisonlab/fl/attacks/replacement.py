"""Model replacement and constrain-and-scale (Bagdasaryan et al. 2020, "How to backdoor federated learning").

The server applies G' = G + eta * sum_k a_k x_k with aggregation weights a_k (normalised to sum
to 1 over the k rows of the round; FedAvg's unweighted mean has a_k = 1/k). To land G' on the
attacker's target X the malicious rows must satisfy sum_{m in M} a_m x_m = (X - G)/eta - sum_{h not in M} a_h x_h.
"""

from __future__ import annotations

import torch

from poisonlab.errors import DataError, check_range
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.types import RoundContext


def round_weights(ctx: RoundContext, k: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """The aggregation weights a (k,) on device, normalised to sum 1: ctx.extras["weights"] if given, else 1/k each."""
    w = ctx.extras.get("weights")
    if w is None:
        return torch.full((k,), 1.0 / k, dtype=dtype, device=device)
    w = torch.as_tensor(w, dtype=dtype, device=device).flatten()
    if w.shape != (k,) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise DataError(f"ctx.extras['weights'] must be {k} non-negative numbers with a positive sum;"
                        f" got shape {tuple(w.shape)}")
    return w / w.sum()


def target_delta(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    """X - G: from ctx.extras["target_params"] (flat X) and ctx.global_params, or else the mean of the
    malicious rows (the attackers' own poisoned local models, X = G + mean own update)."""
    target = ctx.extras.get("target_params")
    if target is None:
        return updates[malicious].mean(dim=0)
    if ctx.global_params is None:
        raise DataError("model_replacement with extras['target_params'] needs ctx.global_params (the flat global model)")
    target = torch.as_tensor(target, dtype=updates.dtype, device=updates.device).flatten()
    if target.shape != (updates.shape[1],):
        raise DataError(f"extras['target_params'] has {target.numel()} values; the model has {updates.shape[1]}")
    return target - ctx.global_params.to(updates.dtype).flatten()


def replacement_rows(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext,
                     omniscient: bool) -> torch.Tensor:
    """The update every malicious row submits so the aggregate lands on the target (one shared row (d,)).

    Omniscient: x = ((X - G)/eta - sum_{h honest} a_h x_h) / sum_{m in M} a_m.
    Non-omniscient (assumes the honest rows cancel): x = (X - G) / (eta * sum_{m in M} a_m),
    i.e. gamma = k / (eta * |M|) times (X - G) under the unweighted mean (K / eta for one attacker).
    All malicious rows submitting the same x is the split with the smallest sum of a_m ||x_m||^2.
    """
    a = round_weights(ctx, updates.shape[0], updates.dtype, updates.device)
    goal = target_delta(updates, malicious, ctx) / ctx.server_lr
    if omniscient:
        goal = goal - (a[~malicious, None] * updates[~malicious]).sum(dim=0)
    a_m = a[malicious].sum()
    if float(a_m) <= 0:
        raise DataError("model_replacement: the malicious rows have zero aggregation weight, so they cannot move the model")
    return goal / a_m


@ATTACKS.register("model_replacement", reference="Bagdasaryan et al. 2020, How to backdoor federated learning (AISTATS)")
def model_replacement(omniscient: bool | None = None):
    """Model replacement: choose the malicious update so that G + eta * aggregate = X (the target model).

    Equal weights, one attacker: x_m = K (X - G)/eta - sum_{k != m} x_k; general weights:
    x_m = ((X - G)/eta - sum_{k != m} a_k x_k) / a_m. Non-omniscient form: x_m = gamma (X - G) with
    gamma = K / eta (assumes the others cancel). X comes from ctx.extras["target_params"], else
    X = G + the attackers' mean own update. omniscient None follows ctx.omniscient.
    """

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        knows = ctx.omniscient if omniscient is None else bool(omniscient)
        return rewrite(updates, malicious, replacement_rows(updates, malicious, ctx, knows))

    return attack


@ATTACKS.register("constrain_and_scale", reference="Bagdasaryan et al. 2020 (constrain-and-scale); Sun et al. 2019 (norm bound)")
def constrain_and_scale(bound: float, gamma: float | None = None):
    """Boost then project to the norm ball of radius B: x_m' = s * min(1, B / ||s||) with s = gamma * x_m.

    gamma None uses the replacement factor k / eta (k rows this round, eta the server lr).
    The result passes any norm clipping or monitor at bound >= B unchanged.
    """
    check_range("bound", bound, 0.0, low_open=True)
    if gamma is not None:
        check_range("gamma", gamma, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        boost = gamma if gamma is not None else updates.shape[0] / ctx.server_lr
        rows = boost * updates[malicious]
        norms = rows.norm(dim=1, keepdim=True)
        factor = torch.clamp(bound / torch.clamp(norms, min=torch.finfo(rows.dtype).tiny), max=1.0)
        return rewrite(updates, malicious, rows * factor)

    return attack


__all__ = ["model_replacement", "constrain_and_scale", "replacement_rows", "round_weights", "target_delta"]
