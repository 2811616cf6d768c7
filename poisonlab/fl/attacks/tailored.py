"""AGR-tailored attacks (Shejwalkar and Houmansadr, NDSS 2021, "Manipulating the Byzantine", Section IV-B).

The malicious rows are all x = mu + gamma * p (mu the benign mean, p a perturbation direction of
fl.attacks.minmax: "unit_vec", "std" or "sign"), with gamma tuned against the deployed rule R:
  selection rules (Krum, Multi-Krum, Bulyan: R leaves some rows unselected on the clean round):
      the largest gamma for which R selects as many crafted rows as it can (all of them, or all the
      rows it selects where that is fewer: Krum's one), by the paper's halving search
      (minmax.gamma_search, Algorithm 1);
  the others (trimmed mean, median, ...): the gamma maximising ||R(rows) - mu||, the deviation of
      the aggregate from the benign mean, by a line search (aware.line_maximize; the authors' code
      walks the same halving steps and keeps a step when the deviation grows).
Benign rows: the honest rows if omniscient, else the attackers' own (simulated round in fl.attacks.aware).
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError, check_range
from poisonlab.fl.attacks.aware import deployed_rule, deviation, line_maximize, simulator
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.minmax import DIRECTIONS, gamma_search
from poisonlab.fl.attacks.minmax import perturbation as perturbation_of
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext

OBJECTIVES = ("auto", "select", "deviation")


def is_selection(run, mu: torch.Tensor) -> bool:
    """True when the rule leaves some row unselected on the round with the candidate rows at mu (gamma = 0)."""
    agg, _ = run(mu)
    return not bool(torch.as_tensor(agg.selected, dtype=torch.bool, device=mu.device).all())


@ATTACKS.register("agr_tailored", reference="Shejwalkar & Houmansadr 2021, Manipulating the Byzantine (NDSS),"
                  " AGR-tailored attacks")
def agr_tailored(rule: str | None = None, rule_params: dict | None = None, perturbation: str = "std",
                 objective: str = "auto", gamma_init: float = 10.0, tau: float = 1e-5, evals: int = 16):
    """AGR-tailored: x = mu + gamma p with gamma searched against the deployed rule (selected, or deviation).

    rule None plays against ctx.extras["aggregator"] (the Federation's rule chain); a name builds
    that rule with rule_params (the attacker's assumption). objective "auto" picks "select" for
    a rule that drops rows on the clean round, else "deviation". gamma_init / tau: the halving
    search (gamma up to 2 gamma_init); evals: rule evaluations of the deviation line search.
    """
    if perturbation not in DIRECTIONS:
        raise ConfigError(f"perturbation '{perturbation}' is not known; accepted: {', '.join(DIRECTIONS)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"agr_tailored objective '{objective}' is not known; accepted: {', '.join(OBJECTIVES)}")
    check_range("gamma_init", gamma_init, 0.0, low_open=True)
    check_range("tau", tau, 0.0, low_open=True)
    check_range("evals", evals, 1)
    direction = perturbation

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        run = simulator(updates, malicious, ctx, deployed_rule(ctx, rule, rule_params, "agr_tailored"))
        ref = benign_rows(updates, malicious, ctx).double()
        mu, p = ref.mean(dim=0), perturbation_of(ref, direction)
        goal = objective if objective != "auto" else ("select" if is_selection(run, mu) else "deviation")
        if goal == "select":
            def ok(g: float) -> bool:
                agg, fake = run(mu + g * p)
                chosen = torch.as_tensor(agg.selected, dtype=torch.bool, device=fake.device)
                return int(chosen[fake].sum()) >= min(int(fake.sum()), int(chosen.sum()))
            gamma = gamma_search(ok, gamma_init, tau)
        else:
            score = deviation(run, mu)
            gamma = line_maximize(lambda g: score(mu + g * p), int(evals))
        return rewrite(updates, malicious, mu + gamma * p)

    return attack

