"""Alternating minimization (Bhagoji et al., ICML 2019, "Analyzing Federated Learning through an Adversarial Lens"),
update-level form: the boosted malicious component kept within the benign updates' spread."""

from __future__ import annotations

import torch

from poisonlab.errors import DataError, check_range
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.signguard_adaptive import finite_rows
from poisonlab.fl.types import RoundContext


def benign_estimate(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    """delta_ben (d,): the honest mean if omniscient; otherwise the previous round's global update
    (G_t - G_{t-1}) / eta from the attack's state (the paper's estimate), or the own rows' mean without one
    (finite rows only; 0 without any)."""
    honest, own = finite_rows(updates[~malicious]), finite_rows(updates[malicious])
    if ctx.omniscient and len(honest):
        return honest.mean(dim=0)
    previous = (ctx.attack_state or {}).get("global")
    if previous is None or ctx.global_params is None or (ctx.attack_state or {}).get("round") != ctx.round - 1:
        return own.mean(dim=0) if len(own) else torch.zeros_like(updates[0])
    now = ctx.global_params.to(device=updates.device, dtype=updates.dtype).flatten()
    if now.shape != (updates.shape[1],):
        raise DataError(f"ctx.global_params has {now.numel()} values; the updates have {updates.shape[1]}")
    return (now - previous.to(now)) / ctx.server_lr


def stealth_radius(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> float:
    """The largest distance of a benign reference row (honest if omniscient, else the attackers' own) to their mean."""
    rows = finite_rows(benign_rows(updates, malicious, ctx)).double()
    if len(rows) == 0:
        return 0.0
    return float((rows - rows.mean(dim=0)).norm(dim=1).max())


def boosted_within(rows: torch.Tensor, centre: torch.Tensor, boost: float, radius: float) -> torch.Tensor:
    """centre + boost * (rows - centre), each row pulled back onto the ball of the given radius around centre."""
    step = boost * (rows - centre)
    length = step.norm(dim=1, keepdim=True)
    factor = torch.where(length > radius, radius / length.clamp_min(torch.finfo(rows.dtype).tiny),
                         torch.ones_like(length))
    return centre + step * factor


@ATTACKS.register("alt_min", reference="Bhagoji, Chakraborty, Mittal and Calo 2019, Analyzing Federated Learning"
                  " through an Adversarial Lens (ICML): alternating minimization, stealthy model poisoning")
def alt_min(boost: float | None = None, slack: float = 1.0, radius: float | None = None):
    """Alternating minimization, update-level: the boosted malicious component kept within the benign spread.

    x_m' = d_ben + s_m * boost * (x_m - d_ben), with s_m <= 1 the largest factor keeping
    ||x_m' - d_ben|| <= radius.

    x_m: the attacker's update trained on its poisoned data (pair it with a poison on the same adversary);
    d_ben: the benign mean update (honest rows if omniscient; else the paper's estimate, the previous
    round's global update, kept as the attack's state); x_m - d_ben is the malicious objective's component.
    boost (explicit boosting, the paper's lambda = 1 / the attacker's aggregation weight): None gives
    k / m (m attackers of k rows). radius (stealth): None gives slack * the largest distance of a benign
    reference row to their mean -- the paper's stealth check that the malicious update's distance to the
    benign ones lies within the benign range. The paper alternates, each local epoch, steps on the boosted
    malicious loss with steps on the stealth loss (benign loss + rho ||delta - d_ben||^2); this form keeps
    its two ingredients, boosting the malicious component and the distance constraint, on the finished
    update (an approximation: the benign-loss steps come from the attacker's own training data only
    through its trained update).
    """
    if boost is not None:
        check_range("boost", boost, 0.0, low_open=True)
    check_range("slack", slack, 0.0)
    if radius is not None:
        check_range("radius", radius, 0.0)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        m = int(malicious.sum())
        if m == 0:
            return updates.clone()
        centre = benign_estimate(updates, malicious, ctx).double()
        bound = radius if radius is not None else slack * stealth_radius(updates, malicious, ctx)
        lam = boost if boost is not None else updates.shape[0] / m
        rows = boosted_within(updates[malicious].double(), centre, lam, bound)
        return rewrite(updates, malicious, torch.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0))

    def next_state(before: torch.Tensor, after: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> dict:
        """The global model of this round (the next round's estimate of the benign update is the change from it)."""
        if ctx.global_params is None:
            return {}
        return {"global": ctx.global_params.flatten().clone(), "round": ctx.round}

    attack.next_state = next_state
    return attack
