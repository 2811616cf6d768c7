"""RoundContext.extras computes the server's root-set update and validation accuracy only when read
(fl/extras.py), and what a rule reads equals the eager server_extras."""

import pytest
import torch

import poisonlab.fl.federation as federation_module
from poisonlab.fl.extras import LazyExtras
from poisonlab.fl.federation import Federation
from tests.test_fl_federation import _blobs, _federation, weighted_mean


def test_lazy_extras_compute_once_on_read():
    calls = []
    extras = LazyExtras({"weights": 1}, {"server_update": lambda: calls.append(1) or 42, "weights": lambda: 0})
    assert "server_update" in extras and len(extras) == 2 and not calls  # `in` and len compute nothing
    assert extras["weights"] == 1  # a given value wins over a lazy one of the same key
    assert extras["server_update"] == 42 and extras.get("server_update") == 42 and calls == [1]
    assert extras.get("missing") is None and extras.pending() == []
    with pytest.raises(KeyError):
        extras["missing"]
    both = LazyExtras({}, {"a": lambda: 1, "b": lambda: 2})
    assert {**both, "c": 3} == {"a": 1, "b": 2, "c": 3} and both.pending() == []


def _with_server_data(aggregator, rounds=3):
    base = _federation(rounds=rounds)
    return Federation(base.model, base.clients, base.test, base.config, aggregator=aggregator,
                      root_data=_blobs(40, 9), validation_data=_blobs(100, 10))


def test_a_rule_that_reads_nothing_costs_no_server_training(monkeypatch):
    trained = []
    real = federation_module.local_updates
    monkeypatch.setattr(federation_module, "local_updates", lambda *a, **k: trained.append(1) or real(*a, **k))
    _with_server_data(weighted_mean).run()
    assert trained == []


def test_what_a_rule_reads_equals_the_eager_extras(monkeypatch):
    seen = []

    def reads_server_update(updates, weights, ctx):
        seen.append((ctx.round, ctx.global_params.clone(), ctx.extras["server_update"].clone(),
                     ctx.extras["base_accuracy"]))
        return weighted_mean(updates, weights, ctx)

    fed = _with_server_data(reads_server_update)
    fed.run()
    assert len(seen) == 3
    for rnd, global_params, server_update, base_accuracy in seen:
        eager = fed.server_extras(rnd, global_params)
        assert torch.equal(eager["server_update"], server_update)
        assert eager["base_accuracy"] == base_accuracy
