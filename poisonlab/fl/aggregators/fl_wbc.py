"""FL-WBC (Sun et al. 2021), a server-side approximation: perturb the coordinates where the aggregate
stopped changing, with Laplace noise.

FL-WBC is a client-side defence: during local training a client compares consecutive parameter
changes, W* = (W_t - W_{t-1}) - (W_{t-1} - W_{t-2}), an estimate of the Hessian's action; where W* is
(close to) zero lies the kernel in which an attack's effect persists, and the client perturbs those
coordinates with Laplace noise M ~ Laplace(0, s): W_j += M_j where |W*_j| <= |M_j| (the rule as
FedML's WbcDefense states it, with |M| on both sides). A server sees one update per client per round,
not local steps, so this rule applies the same test to consecutive *aggregates*:
  u_t = weighted mean of the round's rows;  W* = u_t - u_{t-1} (ctx.state['previous']);
  update = u_t + M * [|W*| <= |M|],  M_j ~ Laplace(0, scale) from generator(seed, 'fl_wbc', round).
Round 0 (no previous aggregate): the plain weighted mean. No row is rejected (selected: all).
What the approximation loses: the per-client, per-step Hessian estimate (the perturbation is decided
once for the global model instead of inside each client's training), so it does not reproduce the
paper's client-side numbers; it is the server-side counterpart the brief asks for.
State: 'previous' (d,) float32, the last unperturbed aggregate.
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import Rule, check_positive, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Sun, Li, Chen and Chen 2021, FL-WBC: Enhancing Robustness against Model Poisoning Attacks in"
             " Federated Learning from a Client Perspective (NeurIPS)")


def laplace(d: int, scale: float, g: torch.Generator) -> torch.Tensor:
    """(d,) float64 Laplace(0, scale) draws by the inverse CDF: -scale sign(u) log(1 - 2|u|), u ~ U[-1/2, 1/2)."""
    u = torch.rand(d, generator=g, dtype=torch.float64, device="cpu") - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2 * u.abs()).clamp_min(-745.0)


@AGGREGATORS.register("fl_wbc", reference=REFERENCE)
def fl_wbc(scale: float = 0.001) -> Rule:
    """FL-WBC (server-side approximation): Laplace noise where consecutive aggregates barely changed."""
    scale = check_positive("fl_wbc", "scale", scale, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        mean = normalized(weights).to(updates.dtype) @ updates
        previous = (ctx.state or {}).get("previous")
        update, perturbed = mean, 0
        if previous is not None and previous.shape == mean.shape and scale > 0:
            noise = laplace(d, scale, generator(ctx.seed, "fl_wbc", ctx.round)).to(updates.device)
            mask = (mean.double() - previous.to(updates.device).double()).abs() <= noise.abs()
            update = (mean.double() + noise * mask).to(updates.dtype)
            perturbed = int(mask.sum())
        return Aggregate(update, torch.ones(k, dtype=torch.bool, device=updates.device), None,
                         {"perturbed": perturbed}, {"previous": mean.float().clone()})

    return Rule(apply, f"fl_wbc(scale={scale})", memory=lambda k, d, clients: {"fl_wbc noise and previous": 28 * d})
