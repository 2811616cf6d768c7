""""Optimal" ALIE and IPM: the attack factor found by line search against the deployed rule (as ByzFL does).

ByzFL (Allouah et al., LPD-EPFL) tunes the factor of an attack with LineMaximize: the factor x >= 0
that maximises ||R(honest rows + malicious rows(x)) - mean(honest rows)||, the deviation of the
deployed rule's output from the honest mean (aware.line_maximize, evals evaluations, start 0,
delta 1, contraction ratio 0.8). Here:
  alie_opt: malicious rows mu - z sigma (ALIE, Baruch et al. 2019), z = x;
  ipm_opt:  malicious rows -epsilon mu (IPM, Xie et al. 2020), epsilon = x.
mu, sigma: mean and population std of the benign rows (honest if omniscient, else the attackers'
own, and then the simulated round is the attackers' own rows plus the crafted copies).
"""

from __future__ import annotations

import torch

from poisonlab.errors import check_range
from poisonlab.fl.attacks.aware import deployed_rule, deviation, line_maximize, simulator
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext

BYZFL = "ByzFL (LPD-EPFL), LineMaximize attack optimizer"


def _optimal(name: str, rows_of, rule, rule_params, evals: int, delta: float, ratio: float):
    """The attack whose malicious rows are rows_of(mu, sigma, x) at the deviation-maximising x."""
    check_range("evals", evals, 1)
    check_range("delta", delta, 0.0, low_open=True)
    check_range("ratio", ratio, 0.5, 1.0, low_open=True, high_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        run = simulator(updates, malicious, ctx, deployed_rule(ctx, rule, rule_params, name))
        ref = benign_rows(updates, malicious, ctx).double()
        mu, sigma = ref.mean(dim=0), ref.std(dim=0, correction=0)
        score = deviation(run, mu)
        x = line_maximize(lambda v: score(rows_of(mu, sigma, v)), int(evals), 0.0, delta, ratio)
        return rewrite(updates, malicious, rows_of(mu, sigma, x))

    return attack


@ATTACKS.register("alie_opt", reference=f"Baruch et al. 2019 (ALIE, NeurIPS); factor tuned as in {BYZFL}")
def alie_opt(rule: str | None = None, rule_params: dict | None = None, evals: int = 16, delta: float = 1.0,
             ratio: float = 0.8):
    """Optimal ALIE: rows mu - z sigma with z >= 0 maximising the rule's deviation from the benign mean.

    rule None plays against ctx.extras["aggregator"]; a name builds it with rule_params.
    """
    return _optimal("alie_opt", lambda mu, sigma, z: mu - z * sigma, rule, rule_params, evals, delta, ratio)


@ATTACKS.register("ipm_opt", reference=f"Xie, Koyejo and Gupta 2020 (IPM, UAI); factor tuned as in {BYZFL}")
def ipm_opt(rule: str | None = None, rule_params: dict | None = None, evals: int = 16, delta: float = 1.0,
            ratio: float = 0.8):
    """Optimal IPM: rows -epsilon mu with epsilon >= 0 maximising the rule's deviation from the benign mean.

    rule None plays against ctx.extras["aggregator"]; a name builds it with rule_params.
    """
    return _optimal("ipm_opt", lambda mu, sigma, e: -e * mu, rule, rule_params, evals, delta, ratio)
