"""The NaN/Inf policy, a step a config's rule starts with (fl.aggregators.build puts it first).

"drop" (default): rows with a NaN or Inf are removed before the rule (warned via logging,
marked not selected); "zero": such rows are replaced by zeros (and marked not selected);
"error": a DataError naming the rows. Non-finite or negative weights are always a DataError.
Detection costs one row sum: a finite sum proves a finite row, only the others are re-checked.
"""

from __future__ import annotations

import logging

import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.aggregators.base import Rule, client_ids
from poisonlab.fl.types import Aggregate, RoundContext

log = logging.getLogger("poisonlab.fl.aggregators")
POLICIES = ("drop", "zero", "error")


def finite_rows(updates: torch.Tensor) -> torch.Tensor:
    """bool (k,): rows without NaN/Inf. A finite row sum implies a finite row (overflow is re-checked)."""
    ok = torch.isfinite(updates.sum(dim=1))
    for i in torch.nonzero(~ok).flatten().tolist():
        ok[i] = bool(torch.isfinite(updates[i]).all())
    return ok


def nonfinite_guard(policy: str = "drop") -> Rule:
    """The NaN/Inf step for policy 'drop', 'zero' or 'error' (see the module docstring); alone, the
    weighted mean of the rows it passes on."""
    if policy not in POLICIES:
        raise ConfigError(f"nonfinite={policy!r} is not a policy; accepted: {', '.join(POLICIES)}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise DataError(f"client weights must be finite and >= 0; got {weights.tolist()[:10]}")
        ok = finite_rows(updates)
        if bool(ok.all()):
            return Aggregate(None, ok, keep=ok)
        bad = client_ids(ctx, len(ok))[~ok].tolist()
        if policy == "error":
            raise DataError(f"updates of clients {bad} contain NaN or Inf; accepted: finite values"
                            " (or nonfinite='drop'/'zero')")
        log.warning("round %d: %d update(s) with NaN/Inf (clients %s): %s", ctx.round, len(bad), bad,
                    "dropped" if policy == "drop" else "zeroed")
        info = {"nonfinite_clients": bad}
        if policy == "drop":
            return Aggregate(None, ok, None, info, keep=ok)
        zeroed = torch.where(ok[:, None], updates, torch.zeros((), dtype=updates.dtype, device=updates.device))
        return Aggregate(None, ok, None, info, rows=zeroed)

    return Rule(apply, f"nonfinite({policy!r})", transform=True)
