"""Resource limits: the memory estimate, term by term on a small config, its agreement with the
engine's client chunking, and the up-front refusal of a huge model x many clients config."""

from __future__ import annotations

import resource

import pytest

from poisonlab.config.load import parse
from poisonlab.errors import PoisonlabError, ResourceError
from poisonlab.resources import (GIB, check_budget, default_budget, estimate, human_bytes,
                                 per_client_bytes)


def tiny(**federated) -> dict:
    return {"data": {"dataset": "digits"}, "model": {"name": "logistic"},
            "federated": {"clients": 6, "sample": 1.0, "local": {"batch_size": 64}, **federated}}


def huge() -> dict:
    """1000 clients, 100 per round, a 2 x 20000-unit MLP on MNIST (~416M parameters), Multi-Krum."""
    return {"data": {"dataset": "mnist", "params": {"part": "train"}},
            "model": {"name": "mlp", "params": {"hidden": [20000, 20000]}},
            "federated": {"clients": 1000, "sample": 0.1, "aggregator": {"name": "multi_krum", "params": {"f": 10}}}}


def test_estimate_by_hand_logistic_on_digits():
    """logistic on 8x8 digits: d = 64 * 10 + 10 = 650; activations per sample 64 (flatten) + 10 (linear) = 74."""
    est = estimate(parse(tiny()))
    d, k, batch = 650, 6, 64
    per_client = 4 * (4 * d + 3 * 74 * batch)  # params, grads, momentum, temp + forward/backward activations
    want = {
        "training (6 clients at once)": k * per_client,
        "updates (6 x 650)": 2 * 4 * k * d,  # the (k, d) matrix and the attack's rewritten copy
        "aggregator working copy": 4 * k * d,
        "models": 3 * 4 * d,
        "data": 3 * 1797 * (4 * 64 + 8),  # x float32 + y int64, three copies
    }
    assert est.parameters == d and est.clients == k and est.clients_at_once == k
    assert est.parts == want
    assert est.total == sum(want.values()) == estimate(parse(tiny())).total


def test_chunk_matches_the_engine():
    """clients_at_once is what fl.local.chunk_size gives the real engine for the same memory budget."""
    from poisonlab.data import load
    from poisonlab.fl.local import chunk_size
    from poisonlab.models import make_model

    config = parse(tiny(clients=20))
    data = load("digits")
    model = make_model("logistic", data.input_shape, data.num_classes)
    per = per_client_bytes(model, _shape(data), 64)
    for budget in (per, 3 * per + 1, 7 * per):
        engine = chunk_size(model, data.input_shape, 64, budget)
        assert estimate(config, data, memory_budget=budget).clients_at_once == min(20, engine)


def _shape(data):
    from poisonlab.resources import DataShape

    return DataShape(tuple(data.input_shape), data.num_classes, len(data))


def test_training_term_is_bounded_by_the_chunk_not_the_clients():
    small, large = (estimate(parse({**huge(), "federated": {**huge()["federated"], "sample": s}}),
                             memory_budget=GIB) for s in (0.1, 1.0))
    train = lambda e: next(v for n, v in e.parts.items() if n.startswith("training"))  # noqa: E731
    assert train(small) == train(large) <= GIB + per_client_bytes_of_huge()
    updates = lambda e: next(v for n, v in e.parts.items() if n.startswith("updates"))  # noqa: E731
    assert updates(large) == 10 * updates(small)
    assert large.total > small.total


def per_client_bytes_of_huge() -> int:
    from poisonlab.resources import data_shape, meta_model

    config = parse(huge())
    shape = data_shape(config)
    return per_client_bytes(meta_model(config, shape), shape, config.federated.local.batch_size)


def test_huge_config_refused_up_front_with_the_estimate():
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ResourceError) as err:
        check_budget(parse(huge()), 8 * GIB)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    message = str(err.value)
    assert isinstance(err.value, PoisonlabError) and "\n" not in message
    est = estimate(parse(huge()))
    assert est.parameters == 784 * 20000 + 20000 + 20000 * 20000 + 20000 + 20000 * 10 + 10
    assert message.startswith(f"this experiment needs about {human_bytes(est.total)} (100 clients x 415.9M parameters")
    assert "over the budget of 8.0 GiB; lower federated.sample" in message
    assert est.total > 300 * GIB  # 2 x 4 x 100 x 416M for the update matrices alone
    assert grown_kib < 512 * 1024, "the estimate allocated the model (it must use the meta device)"


def test_within_budget_returns_the_estimate():
    est = check_budget(parse(tiny()), GIB)
    assert est.total < GIB


def test_refusal_reaches_the_user_as_one_line(capsys, monkeypatch):
    """A ResourceError through poisonlab's CLI error path: exit 2, one line (the run command's own handler)."""
    from poisonlab import cli

    def refuse(args):
        check_budget(parse(huge()), 8 * GIB)

    class Module:
        NAME, HELP = "budget-probe", "probe"
        add_arguments = staticmethod(lambda parser: None)
        run = staticmethod(refuse)

    monkeypatch.setattr(cli, "_command_modules", lambda: iter([Module]))
    assert cli.main(["budget-probe"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poisonlab: error: this experiment needs about")


def test_centralized_and_foolsgold_terms():
    cent = estimate(parse({"data": {"dataset": "digits"}, "model": {"name": "logistic"},
                           "train": {"optimizer": "adam", "batch_size": 64}}))
    assert cent.parts["models (clean and poisoned)"] == 2 * 4 * 4 * 650
    assert cent.parts["activations"] == 4 * 3 * 74 * 64
    fg = estimate(parse(tiny(clients=50, sample=0.1, aggregator={"name": "foolsgold"})))
    assert fg.parts["foolsgold history (50 x 650)"] == 4 * 50 * 650 + 8 * 5 * 5  # every client's history, k x k


def test_default_budget_is_three_quarters_of_physical_memory():
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert default_budget() == int(0.75 * physical)
    assert default_budget(0.5) < default_budget()
