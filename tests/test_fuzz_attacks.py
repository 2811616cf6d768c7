"""Fuzzed update attacks: with NaN, +-Inf and huge rows in the round, no registered attack crashes.

Hypothesis draws a float32 (k, d) round (fuzz_aggregators.round_inputs: ordinary, huge and
non-finite entries), a malicious mask with at least one honest row (alie refuses a round with none,
f < n) and the attacker's knowledge. Every attack in ``ATTACKS``
(the aggregator-aware ones against the Federation's guarded median, passed as
ctx.extras["aggregator"]) must return a (k, d) float32 matrix whose honest rows are the input's,
bit for bit, and the guarded median of it must be finite. Weights are made positive (model_replacement
answers zero-weight attackers with a DataError, by design). Examples are derandomized.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.attacks import ATTACKS, get
from poisonlab.fl.types import RoundContext
from tests.test_fuzz_aggregators import round_inputs

PARAMS = {"constrain_and_scale": {"bound": 1.0}}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal entries, NaN equal to NaN."""
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


@pytest.mark.parametrize("name", ATTACKS.names())
def test_no_attack_crashes_on_nonfinite_rounds(name: str):
    rule = build_rule("median", {})

    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow])
    @given(inputs=round_inputs(min_k=2), data=st.data())
    def run(inputs, data):
        x, w = inputs
        k, d = x.shape
        mal = torch.tensor([False] + data.draw(st.lists(st.booleans(), min_size=k - 1, max_size=k - 1), label="malicious"))
        ctx = RoundContext(num_clients=k, round=1, seed=3, omniscient=data.draw(st.booleans(), label="omniscient"),
                           global_params=torch.ones(d), extras={"weights": w.clamp(min=1.0), "aggregator": rule})
        out = get(name, **PARAMS.get(name, {}))(x, mal, ctx)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert same(out[~mal], x[~mal])
        assert bool(torch.isfinite(rule(out, torch.ones(k), ctx).update).all())

    run()
