"""Client auditing: robust z-scores, flags, exclusion for r rounds, reputation weights, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, mean
from poisonlab.fl.aggregators.auditing import audited, robust_z
from poisonlab.fl.types import RoundContext
from poisonlab.rng import numpy_rng


def test_robust_z_by_hand():
    z = robust_z(torch.tensor([1.0, 2, 3, 4, 100]))
    # median 3, MAD = median(2, 1, 0, 1, 97) = 1 -> scale 1.4826
    torch.testing.assert_close(z, torch.tensor([-2, -1, 0, 1, 97]) / 1.4826)
    flat = robust_z(torch.tensor([5.0, 5, 5, 5, 9]))  # MAD 0 -> 1.2533 * mean |dev| = 1.2533 * 0.8
    torch.testing.assert_close(flat, torch.tensor([0, 0, 0, 0, 4]) / (1.2533 * 0.8))
    assert robust_z(torch.tensor([2.0, 2, 2])).tolist() == [0, 0, 0]


def rows(seed=0, k=10, d=20):
    x = torch.from_numpy(numpy_rng(seed, "audit").standard_normal((k, d)).astype(np.float32)) * 0.1 + 1.0
    return x


def ctx(r, k=10, state=None):
    return RoundContext(round=r, sampled=torch.arange(k), num_clients=k, state=state)


def test_flag_exclude_for_r_rounds_and_reputation():
    x = rows()
    x[0] *= 40.0  # a huge norm
    x[1] = -x[1]  # pointing away from everyone
    rule = audited(mean(), z=3.0, exclude_rounds=2, reputation=0.9)
    w = torch.ones(10)
    r0 = rule(x, w, ctx(0))
    assert r0.info["flagged"] == [0, 1]
    assert r0.selected.tolist() == [False, False] + [True] * 8
    assert r0.state["reputation"][:3].tolist() == pytest.approx([0.9, 0.9, 1.0])
    state = r0.state
    for r in (1, 2):  # excluded in rounds 1 and 2: the mean is over rows 2..9 only
        out = rule(x, w, ctx(r, state=state))
        state = out.state
        assert out.info["excluded"] == [0, 1]
        torch.testing.assert_close(out.update, x[2:].mean(dim=0))
        assert out.scores[:2].tolist() == [float("inf")] * 2
    back = rule(x, w, ctx(3, state=state))
    assert back.info["excluded"] == [] and back.info["flagged"] == [0, 1]
    assert rule(x, w, ctx(1)).info["excluded"] == []  # without the state: nobody excluded (no hidden state)


def test_reputation_weights_later_rounds():
    x = rows(1)
    rule = audited(mean(), z=1e9, exclude_rounds=0, reputation=0.5)
    state = {"reputation": torch.tensor([0.25] + [1.0] * 9),  # client 0 lost trust earlier
             "excluded_until": torch.zeros(10, dtype=torch.long)}
    out = rule(x, torch.ones(10), ctx(5, state=state))
    expected = (0.25 * x[0] + x[1:].sum(dim=0)) / 9.25
    torch.testing.assert_close(out.update, expected)
    # nobody flagged, all selected: trust 1 -> reputation 0.5 * 0.25 + 0.5 = 0.625
    assert float(out.state["reputation"][0]) == pytest.approx(0.625)
    assert float(state["reputation"][0]) == 0.25  # the given state is not modified


def test_state_dict_roundtrip_and_registry():
    x = rows(2)
    x[4] *= 50
    rule = get("audited", rule="centered_clipping", params={"tau": 5.0}, exclude_rounds=3)
    state = rule(x, torch.ones(10), ctx(0)).state
    assert set(state) == {"excluded_until", "reputation", "rule.center"}
    again = get("audited", rule="centered_clipping", params={"tau": 5.0}, exclude_rounds=3)
    second = rule(x, torch.ones(10), ctx(1, state=state))
    torch.testing.assert_close(again(x, torch.ones(10), ctx(1, state=state)).update, second.update)
    assert not torch.equal(second.update, rule(x, torch.ones(10), ctx(1)).update)  # the centre matters
    with pytest.raises(ConfigError, match="reputation=1.5 is out of range"):
        audited(mean(), reputation=1.5)
    with pytest.raises(ConfigError, match="aggregator 'medain' is not known"):
        get("audited", rule="medain")


def test_everyone_excluded_gives_zero_update():
    rule = audited(mean())
    state = {"excluded_until": torch.full((3,), 10), "reputation": torch.ones(3)}
    out = rule(torch.ones(3, 4), torch.ones(3), RoundContext(round=1, sampled=torch.arange(3), state=state))
    assert out.update.tolist() == [0.0] * 4 and not out.selected.any()
    assert out.state["excluded_until"].tolist() == [10, 10, 10]
