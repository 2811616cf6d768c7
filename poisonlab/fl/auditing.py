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

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import AGGREGATORS, register
from poisonlab.fl.aggregators.base import (check_int, check_positive, check_updates, client_ids, empty,
                                           row_norms, subset_context)
from poisonlab.fl.types import Aggregate, RoundContext


def robust_z(values: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """(values - median) / (1.4826 MAD) with the median and MAD of reference (default: values)."""
    ref = values if reference is None else reference
    if ref.numel() == 0:
        return torch.zeros_like(values)
    med = ref.median()
    scale = 1.4826 * (ref - med).abs().median()
    if not bool(scale > 0):
        scale = 1.2533 * (ref - med).abs().mean()
    if not bool(scale > 0):
        return torch.zeros_like(values)
    return (values - med) / scale


class Audited:
    """A rule wrapped with client monitors, exclusions and reputation (see the module docstring)."""

    def __init__(self, rule, z: float = 3.0, exclude_rounds: int = 2, reputation: float = 0.9):
        self.rule, self.z, self.exclude_rounds, self.rho = rule, z, exclude_rounds, reputation
        self.excluded_until = torch.zeros(0, dtype=torch.long)
        self.reputation = torch.ones(0)

    def __repr__(self) -> str:
        return f"audited({self.rule!r}, z={self.z}, exclude_rounds={self.exclude_rounds}, reputation={self.rho})"

    def _grow(self, clients: int) -> None:
        """Make room for client ids < clients (new clients: not excluded, reputation 1)."""
        if clients > len(self.excluded_until):
            extra = torch.zeros(clients - len(self.excluded_until), dtype=torch.long)
            self.excluded_until = torch.cat([self.excluded_until, extra])
        if clients > len(self.reputation):
            self.reputation = torch.cat([self.reputation, torch.ones(clients - len(self.reputation))])

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        check_updates(updates, weights)
        k = updates.shape[0]
        ids = client_ids(ctx, k)
        self._grow(max(int(ids.max()) + 1 if k else 0, ctx.num_clients))
        active = self.excluded_until[ids] <= ctx.round
        if not bool(active.any()):
            return empty(updates, {"excluded": ids.tolist()})
        inner = self.rule(updates[active], (weights * self.reputation[ids])[active], subset_context(ctx, active))
        suspicion, flagged = self._monitor(updates, active, inner.update)
        selected = torch.zeros(k, dtype=torch.bool)
        selected[active] = inner.selected
        trust = (selected & ~flagged).float()
        seen = ids[active]
        self.reputation[seen] = self.rho * self.reputation[seen] + (1 - self.rho) * trust[active]
        self.excluded_until[ids[flagged]] = ctx.round + 1 + self.exclude_rounds
        info = {**inner.info, "flagged": ids[flagged].tolist(), "excluded": ids[~active].tolist()}
        return Aggregate(inner.update, selected & ~flagged, suspicion, info)

    def _monitor(self, updates: torch.Tensor, active: torch.Tensor, aggregate: torch.Tensor):
        """(suspicion (k,), flagged (k,)) from the norm and cosine robust z-scores."""
        norms = row_norms(updates)
        cos = (updates @ aggregate) / (norms * torch.linalg.vector_norm(aggregate)).clamp_min(1e-30)
        z_norm = robust_z(norms, norms[active]).abs()
        z_cos = -robust_z(cos, cos[active])
        suspicion = torch.maximum(z_norm, z_cos)
        flagged = (suspicion > self.z) & active
        return suspicion.masked_fill(~active, float("inf")), flagged

    def state_dict(self) -> dict:
        """Exclusions, reputations and the wrapped rule's state (under 'rule.')."""
        state = {"excluded_until": self.excluded_until.clone(), "reputation": self.reputation.clone()}
        if hasattr(self.rule, "state_dict"):
            state.update({f"rule.{key}": v for key, v in self.rule.state_dict().items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        self.excluded_until = state["excluded_until"].clone()
        self.reputation = state["reputation"].clone()
        if hasattr(self.rule, "load_state_dict"):
            self.rule.load_state_dict({key[5:]: v for key, v in state.items() if key.startswith("rule.")})


def audited(rule, z: float = 3.0, exclude_rounds: int = 2, reputation: float = 0.9) -> Audited:
    """Wrap a rule (or a rule name) with norm/cosine monitors, exclusion for r rounds and reputation weights."""
    if isinstance(rule, str):
        rule = AGGREGATORS.get(rule)
    try:
        ok = 0 <= float(reputation) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"audited: reputation={reputation!r} is out of range; accepted: [0, 1]")
    return Audited(rule, check_positive("audited", "z", z), check_int("audited", "exclude_rounds", exclude_rounds),
                   float(reputation))


@register("audited", reference="Client auditing by robust z-scores (median / MAD) of update norms and"
                                " directions, with reputation (cf. Sun et al. 2019; Fung et al. 2020)")
def audited_rule(rule: str = "mean", params: dict | None = None, z: float = 3.0, exclude_rounds: int = 2,
                 reputation: float = 0.9) -> Audited:
    """Client auditing around a named rule: flag odd norms/directions, exclude, weight by reputation."""
    return audited(AGGREGATORS.get(rule, **(params or {})), z, exclude_rounds, reputation)
