"""The stateful-attack path: apply_adversaries hands each adversary its state, the Federation keeps and checkpoints it."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.adversary import Adversary
from poisonlab.fl.attacks import get
from poisonlab.fl.round import apply_adversaries
from poisonlab.fl.types import RoundContext


def counting():
    """A stateful attack: writes the number of rounds it has run into its rows."""

    def attack(updates, malicious, ctx):
        out = updates.clone()
        out[malicious] = float((ctx.attack_state or {}).get("runs", 0))
        return out

    attack.next_state = lambda before, after, malicious, ctx: {"runs": (ctx.attack_state or {}).get("runs", 0) + 1}
    return attack


def test_each_adversary_gets_its_own_state_back():
    x, states = torch.ones(4, 3), {}
    advs = [Adversary(clients=[0], attack=counting()), Adversary(clients=[2], attack=counting())]
    masks = [torch.tensor([True, False, False, False]), torch.tensor([False, False, True, False])]
    for expected in range(3):
        out = apply_adversaries(x.clone(), masks, advs, RoundContext(round=expected), states)
        assert out[0, 0] == expected and out[2, 0] == expected and out[1, 0] == 1.0
    assert states == {0: {"runs": 3}, 1: {"runs": 3}}
    with pytest.raises(ConfigError, match="keeps state across rounds"):
        apply_adversaries(x.clone(), masks, advs, RoundContext())  # an engine without attack state (Flower)


def recording(seen):
    """The mean, recording the malicious rows the rule receives each round."""
    from tests.test_fl_federation import weighted_mean

    def rule(updates, weights, ctx):
        seen.append(updates[ctx.malicious].clone())
        return weighted_mean(updates, weights, ctx)

    return rule


def test_stale_resends_the_previous_rounds_honest_update_in_a_federation():
    from tests.test_fl_federation import _federation

    inner, honest, received = get("stale"), [], []

    def attack(updates, malicious, ctx):
        return inner(updates, malicious, ctx)

    def next_state(before, after, malicious, ctx):
        honest.append(before[malicious].clone())
        return inner.next_state(before, after, malicious, ctx)

    attack.next_state = next_state
    _federation(rounds=4, sample=1.0, aggregator=recording(received),
                adversaries=[Adversary(clients=[1, 6], attack=attack)]).run()
    assert torch.equal(received[0], torch.zeros_like(received[0]))  # no earlier update yet
    for t in range(1, 4):
        assert torch.equal(received[t], honest[t - 1])
        assert not torch.equal(received[t], honest[t])


def test_attack_state_survives_a_resume(tmp_path):
    from tests.support import history_without_times
    from tests.test_fl_federation import _federation

    def fed(**cfg):
        return _federation(rounds=4, sample=1.0, adversaries=[Adversary(clients=[1, 6], attack=get("threedfed"))],
                           **cfg)

    full = fed().run()
    fed(checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(stop_after=2)
    resumed = fed(checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(resume=True)
    assert history_without_times(resumed.history) == history_without_times(full.history)
    assert torch.equal(resumed.params, full.params)
