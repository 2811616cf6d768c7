"""Stale updates: each attacker resends the update it computed some rounds earlier (a stateful attack)."""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext

MAX_DELAY = 1000
"""Most rounds a stale update may lag (the state keeps one (m, d) block per round of lag)."""


def row_ids(ctx: RoundContext, k: int, device) -> torch.Tensor:
    """The client ids (k,) of the round's rows: ctx.sampled, or 0..k-1 without it."""
    if ctx.sampled is None:
        return torch.arange(k, device=device)
    ids = ctx.sampled if isinstance(ctx.sampled, torch.Tensor) else torch.tensor(ctx.sampled, device="cpu")
    return ids.to(device=device, dtype=torch.long).flatten()


def earlier_rows(state: dict | None, round: int, ids: torch.Tensor, d: int, dtype, device) -> torch.Tensor:
    """(len(ids), d): the update each client id computed in the given round (from the state), 0 where it has none."""
    out = torch.zeros(len(ids), d, dtype=dtype, device=device)
    if not state or f"ids.{round}" not in state:
        return out
    old_ids, old_rows = state[f"ids.{round}"].to(device), state[f"rows.{round}"].to(device=device, dtype=dtype)
    match = ids[:, None] == old_ids[None, :]  # (m, m_old), at most one True per row
    found = match.any(dim=1)
    out[found] = old_rows[match[found].to(torch.int8).argmax(dim=1)]
    return out


@ATTACKS.register("stale", reference="Lin et al. 2019, Free-riders in federated learning (stale / lazy updates);"
                  " FedML's lazy worker")
def stale(delay: int = 1):
    """Stale update: each malicious client sends the update it computed delay rounds earlier, x_m^t' = x_m^{t-delay}.

    The update resent is the one the client computed then (before any attack), so the attacker trains
    only when it is not resending -- a lazy worker that stays plausible (the row is a real, old update,
    unlike the zero update). A client with no update from round t - delay (it was not sampled, or
    t < delay) sends 0. The rows of the last delay rounds are the attack's state (next_state), kept by
    the engine between rounds; called without that state (ctx.attack_state None) every row is 0.
    """
    if isinstance(delay, bool) or not isinstance(delay, int) or not 1 <= delay <= MAX_DELAY:
        raise ConfigError(f"stale delay={delay!r} is not valid; accepted: an integer number of rounds in"
                          f" [1, {MAX_DELAY}]")

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        ids = row_ids(ctx, updates.shape[0], updates.device)[malicious]
        rows = earlier_rows(ctx.attack_state, ctx.round - delay, ids, updates.shape[1], updates.dtype, updates.device)
        return rewrite(updates, malicious, rows)

    def next_state(before: torch.Tensor, after: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> dict:
        """The kept rounds (> round - delay) of the old state plus this round's honest malicious rows and their ids."""
        malicious = check(before, malicious)
        state = {key: value for key, value in (ctx.attack_state or {}).items()
                 if int(key.split(".")[1]) > ctx.round - delay}
        state[f"ids.{ctx.round}"] = row_ids(ctx, before.shape[0], before.device)[malicious].clone()
        state[f"rows.{ctx.round}"] = before[malicious].clone()
        return state

    attack.next_state = next_state
    return attack
