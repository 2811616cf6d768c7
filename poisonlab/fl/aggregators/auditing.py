"""Client auditing: watch each client's update norm and its cosine to the aggregate, flag outliers,
exclude flagged clients for some rounds, and weight later rounds by a reputation.

Per round, over the rows of clients not currently excluded:
  1. the wrapped rule aggregates them with weights w_i * reputation_i;
  2. monitors: n_i = ||x_i|| and c_i = cos(x_i, aggregate); robust z-scores
     z = (value - median) / (1.4826 * MAD) (MAD = median absolute deviation; if MAD = 0,
     1.2533 * mean absolute deviation; if that is 0 too, z = 0);
  3. flag a client if |z(n_i)| > z or z(c_i) < -z (pointing away from the others);
  4. a flagged client is excluded from the next exclude_rounds rounds;
  5. reputation_i <- rho * reputation_i + (1 - rho) * trust_i, trust_i = 1 if it was selected by the
     rule and not flagged, else 0 (rho = ``reputation``; 1 keeps every reputation at 1).
Flagged rows were detected after this round's aggregation, so they contributed to it; they are
reported not selected. selected: rows the rule selected, not excluded, not flagged;
scores: max(|z(norm)|, -z(cos)) (higher = more suspicious; excluded rows +inf).
"""

from __future__ import annotations

import dataclasses

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import (Rule, check_int, check_positive, client_ids, empty, row_norms,
                                           subset_context)
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.stats import robust_z


def audited(rule: Rule | str, z: float = 3.0, exclude_rounds: int = 2, reputation: float = 0.9) -> Rule:
    """Wrap a rule (or a rule name) with norm/cosine monitors, exclusion for r rounds and reputation weights.

    State: {'excluded_until': long (clients,), round from which each client is admitted again;
    'reputation': float (clients,)} and the wrapped rule's state under 'rule.'.
    """
    if isinstance(rule, str):
        rule = AGGREGATORS.get(rule)
    try:
        ok = 0 <= float(reputation) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"audited: reputation={reputation!r} is out of range; accepted: [0, 1]")
    z, exclude_rounds = check_positive("audited", "z", z), check_int("audited", "exclude_rounds", exclude_rounds)
    rho = float(reputation)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k = updates.shape[0]
        ids = client_ids(ctx, k)
        state = ctx.state or {}
        clients = max(int(ids.max()) + 1, ctx.num_clients)
        excluded_until = _grown(state.get("excluded_until", torch.zeros(0, dtype=torch.long, device=ids.device)),
                                clients, 0)
        trusted = _grown(state.get("reputation", torch.ones(0, device=ids.device)), clients, 1)
        inner_state = {key[5:]: v for key, v in state.items() if key.startswith("rule.")} or None
        active = excluded_until[ids] <= ctx.round
        if not bool(active.any()):
            return empty(updates, {"excluded": ids.tolist()}, _state(excluded_until, trusted, inner_state))
        sub = dataclasses.replace(subset_context(ctx, active), state=inner_state)
        inner = rule(updates[active], (weights * trusted[ids])[active], sub)
        suspicion, flagged = _monitor(updates, active, inner.update, z)
        selected = torch.zeros(k, dtype=torch.bool, device=updates.device)
        selected[active] = inner.selected
        trust = (selected & ~flagged).float()
        seen = ids[active]
        trusted[seen] = rho * trusted[seen] + (1 - rho) * trust[active]
        excluded_until[ids[flagged]] = ctx.round + 1 + exclude_rounds
        info = {**inner.info, "flagged": ids[flagged].tolist(), "excluded": ids[~active].tolist()}
        return Aggregate(inner.update, selected & ~flagged, suspicion, info,
                         _state(excluded_until, trusted, inner.state))

    return Rule(apply, f"audited({rule!r}, z={z}, exclude_rounds={exclude_rounds}, reputation={rho})",
                check_rows=rule.check_rows, memory=rule.memory_parts)


def _grown(values: torch.Tensor, clients: int, fill) -> torch.Tensor:
    """A copy of values with room for client ids < clients (new clients get fill)."""
    if clients <= len(values):
        return values.clone()
    return torch.cat([values, torch.full((clients - len(values),), fill, dtype=values.dtype,
                                             device=values.device)])


def _state(excluded_until: torch.Tensor, reputation: torch.Tensor, inner: dict | None) -> dict:
    """The audited state: exclusions, reputations and the wrapped rule's state under 'rule.'."""
    return {"excluded_until": excluded_until, "reputation": reputation,
            **{f"rule.{key}": v for key, v in (inner or {}).items()}}


def _monitor(updates: torch.Tensor, active: torch.Tensor, aggregate: torch.Tensor, z: float):
    """(suspicion (k,), flagged (k,)) from the norm and cosine robust z-scores."""
    norms = row_norms(updates)
    cos = (updates @ aggregate) / (norms * torch.linalg.vector_norm(aggregate)).clamp_min(1e-30)
    z_norm = robust_z(norms, norms[active]).abs()
    z_cos = -robust_z(cos, cos[active])
    suspicion = torch.maximum(z_norm, z_cos)
    flagged = (suspicion > z) & active
    return suspicion.masked_fill(~active, float("inf")), flagged


@AGGREGATORS.register("audited", reference="Client auditing by robust z-scores (median / MAD) of update norms and"
                                           " directions, with reputation (cf. Sun et al. 2019; Fung et al. 2020)")
def audited_rule(rule: str = "mean", params: dict | None = None, z: float = 3.0, exclude_rounds: int = 2,
                 reputation: float = 0.9) -> Rule:
    """Client auditing around a named rule: flag odd norms/directions, exclude, weight by reputation."""
    return audited(AGGREGATORS.get(rule, **(params or {})), z, exclude_rounds, reputation)
