"""What the aggregator-aware attacks share: the deployed rule, the simulated round, the factor searches.

An aggregator-aware attack tries candidate malicious rows against the server's rule and keeps the
best. The rule is ``ctx.extras["aggregator"]`` (the Federation puts its rule chain there), or one
the attack builds itself from ``rule`` / ``rule_params`` (the attacker's assumption about the AGR).

The simulated round is what the attacker can see: omniscient, the whole (k, d) matrix with the
malicious rows replaced by the candidate; otherwise (partial knowledge, as in Fang et al. 2020)
the attackers' own honest updates followed by the candidate rows, so no honest row is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from poisonlab.errors import DataError
from poisonlab.fl.types import RoundContext


def deployed_rule(ctx: RoundContext, rule: str | None, rule_params: dict | None, attack: str) -> Callable:
    """The rule the attack plays against: get(rule, **rule_params) if rule is named, else ctx.extras["aggregator"]."""
    if rule is not None:
        from poisonlab.fl.aggregators import get as get_rule  # the attacks package stays importable alone
        return get_rule(rule, **(rule_params or {}))
    found = ctx.extras.get("aggregator")
    if found is None:
        raise DataError(f"{attack} needs the deployed rule: set its rule parameter (e.g. rule: trimmed_mean) or run"
                        " it in a Federation, which passes ctx.extras['aggregator']")
    return found


def simulator(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext, rule: Callable):
    """run(rows (d,)) -> (Aggregate, bool mask of the candidate rows): the rule on the round the attacker sees.

    Omniscient: the k rows with every malicious row set to the candidate, the round's weights.
    Otherwise: the attackers' own m rows then m copies of the candidate, equal weights.
    """
    m = int(malicious.sum())
    view = dataclasses.replace(ctx, sampled=None, malicious=None,
                               extras={k: v for k, v in ctx.extras.items() if k not in ("weights", "aggregator")})
    if ctx.omniscient and bool((~malicious).any()):
        base, fake = updates, malicious
        weights = ctx.extras.get("weights")
        weights = torch.ones(len(updates), dtype=updates.dtype, device=updates.device) if weights is None else weights
    else:
        base = torch.cat([updates[malicious], updates[malicious]])
        fake = torch.arange(2 * m, device=updates.device) >= m
        weights = torch.ones(2 * m, dtype=updates.dtype, device=updates.device)

    def run(rows: torch.Tensor):
        trial = base.clone()
        trial[fake] = rows.to(base.dtype).expand(m, base.shape[1])
        return rule(trial, weights, view), fake

    return run


def line_maximize(score: Callable[[float], float], evals: int = 16, start: float = 0.0, delta: float = 1.0,
                  ratio: float = 0.8) -> float:
    """Best-effort argmax over x >= 0 of score(x) with evals evaluations (ByzFL's LineMaximize scheme).

    Expansion: from start step +delta while the score improves, doubling delta; on the first failure
    shrink delta by ratio. Contraction: probe delta away from the last proposal towards the best
    point (halfway to 0 where a step would cross it), keep any improvement, shrink delta by ratio each time. Returns the best x
    (start if nothing beats it). A NaN score never counts as an improvement.
    """
    best_x, best_y = start, score(start)
    prop_x, evals = start, evals - 1
    while evals > 0:
        prop_x = best_x + delta
        prop_y = score(prop_x)
        evals -= 1
        if prop_y > best_y:
            best_x, best_y, delta = prop_x, prop_y, delta * 2
        else:
            delta *= ratio
            break
    while evals > 0:
        if prop_x < best_x:
            prop_x += delta
        else:
            prop_x = prop_x - delta if prop_x >= delta else prop_x / 2  # never below 0
        prop_y = score(prop_x)
        evals -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
        delta *= ratio
    return best_x


def deviation(run, centre: torch.Tensor) -> Callable[[torch.Tensor], float]:
    """score(rows) = ||rule output - centre|| on the simulated round (the objective of the optimal/tailored forms)."""

    def score(rows: torch.Tensor) -> float:
        value = float((run(rows)[0].update.to(centre.dtype) - centre).norm())
        return value if value == value and value != float("inf") else float("-inf")

    return score
