"""Shared helpers of the update attacks: input checks, the benign reference rows, row rewriting."""

from __future__ import annotations

import torch

from poisonlab.errors import DataError
from poisonlab.fl.types import RoundContext


def check(updates: torch.Tensor, malicious: torch.Tensor) -> torch.Tensor:
    """Validate a (k, d) update matrix and its (k,) malicious mask; return the mask as bool."""
    if updates.dim() != 2:
        raise DataError(f"updates have shape {tuple(updates.shape)}; expected (k, d)")
    malicious = torch.as_tensor(malicious, dtype=torch.bool, device=updates.device)
    if malicious.shape != (updates.shape[0],):
        raise DataError(f"malicious mask has shape {tuple(malicious.shape)}; expected ({updates.shape[0]},)")
    return malicious


def benign_rows(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    """The updates the attacker treats as benign: the honest rows if ctx.omniscient, else its own rows.

    The malicious rows of the input are the attackers' own honestly trained updates (the attack
    has not rewritten them yet), so a non-omniscient attacker estimates the benign statistics
    from them and never reads an honest row. With no honest row in the round, both forms use
    the malicious rows.
    """
    if ctx.omniscient and bool((~malicious).any()):
        return updates[~malicious]
    return updates[malicious]


def rewrite(updates: torch.Tensor, malicious: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A copy of updates whose malicious rows are replaced by rows ((d,) broadcast, or (m, d))."""
    out = updates.clone()
    out[malicious] = rows.to(updates.dtype).expand(int(malicious.sum()), updates.shape[1])
    return out
