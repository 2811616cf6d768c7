"""Stale updates: each attacker resends the update it computed delay rounds earlier (Lin et al. 2019's lazy worker)."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def rounds(attack, inputs, sampled):
    """Run attack over rounds of (updates, malicious) with its state carried as the engine does; outputs."""
    state, outs = None, []
    for r, ((x, mal), ids) in enumerate(zip(inputs, sampled)):
        ctx = RoundContext(round=r, sampled=torch.tensor(ids), attack_state=state)
        out = attack(x, mal, ctx)
        state = attack.next_state(x, out, mal, ctx)
        outs.append(out)
    return outs, state


def test_stale_by_two_rounds_follows_the_client_ids():
    xs = [torch.full((3, 2), float(10 * r)) + torch.arange(3.0)[:, None] for r in range(4)]  # row i of round r: 10r + i
    mal = torch.tensor([False, True, True])
    # client 7 is malicious in every round, client 8 only from round 2 on (row 2), client 9 honest
    sampled = [[5, 7, 9], [5, 7, 9], [5, 7, 8], [5, 7, 8]]
    masks = [torch.tensor([False, True, False])] * 2 + [mal] * 2
    outs, state = rounds(get("stale", delay=2), list(zip(xs, masks)), sampled)
    assert torch.equal(outs[0][1], torch.zeros(2)) and torch.equal(outs[1][1], torch.zeros(2))
    assert torch.equal(outs[2][1], xs[0][1])  # client 7's round-0 update
    assert torch.equal(outs[3][1], xs[1][1])
    assert torch.equal(outs[2][2], torch.zeros(2)) and torch.equal(outs[3][2], torch.zeros(2))  # 8: none 2 rounds ago
    assert torch.equal(outs[3][0], xs[3][0])  # honest rows untouched
    assert sorted(state) == ["ids.2", "ids.3", "rows.2", "rows.3"]  # only the last `delay` rounds are kept


def test_stale_without_state_sends_zero_and_validates_delay():
    x, mal = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([True, False, False, True])
    out = get("stale")(x, mal, RoundContext(round=5))
    assert torch.equal(out[mal], torch.zeros(2, 3)) and torch.equal(out[~mal], x[~mal])
    for bad in (0, 1.5, True, 10**6):
        with pytest.raises(ConfigError, match="delay"):
            get("stale", delay=bad)
