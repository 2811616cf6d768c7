"""One scenario on both engines: the built-in Federation and Flower (RobustStrategy + ClientApps, in process).

Both call the shared server steps of poisonlab.fl.round, so their round records must agree field
by field. The scenario: digits + logistic regression, 10 clients sampled 0.65 per round (6.5 ->
6 with Python's rounding; Flower's own rounding gave 7 before the steps were shared), one
backdoor adversary (poisoned data, boost x3, IPM on its update) forced into every round, and
Multi-Krum (f=1, keeps 4 of 6), which flags two rows per round.

The attack is non-omniscient (``omniscient: false``) and the adversary controls ONE client: a
Flower ClientApp only ever sees its own row, so the engines agree only where the engine's attack
too sees nothing but the attacker's own row. Flower's update is (global + update) - global, equal
to the engine's row up to float rounding, hence the tolerances on norms, accuracy and loss.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from flwr.app import ConfigRecord, Context, RecordDict  # noqa: E402

from poisonlab.flower.apps import client_app, make_strategy  # noqa: E402
from poisonlab.flower.arrays import read_record, to_record  # noqa: E402
from poisonlab.flower.prepared import Prepared, build_federation, experiment_json, parse_experiment  # noqa: E402
from tests.test_flower_strategy import FakeGrid, task_identity  # noqa: E402,F401  (the autouse fixture)

K, ROUNDS = 10, 3
EXPERIMENT = {
    "name": "engines", "seed": 5, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
    "federated": {
        "clients": K, "rounds": ROUNDS, "sample": 0.65, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "adversary": {"clients": [4], "boost": 3.0, "omniscient": False, "force_participation": True,
                      "poison": {"name": "backdoor", "params": {
                          "trigger": {"name": "patch", "params": {"size": 2, "color": [1.0],
                                                                  "position": "bottom-right"}},
                          "target": 0, "rate": 0.5}},
                      "attack": {"name": "ipm", "params": {"epsilon": 0.5}}},
        "aggregator": {"name": "multi_krum", "params": {"f": 1, "m": 4}}}}
NODE = 1000  # node id of client c is NODE + c


def engine_history(experiment=EXPERIMENT, result=None) -> list[dict]:
    config = parse_experiment(experiment)
    run = build_federation(config).run()
    if result is not None:
        result["buffers"] = run.buffers
    return [r.to_dict() for r in run.history]


def flower_history(experiment=EXPERIMENT, result=None) -> list[dict]:
    """The rounds as Flower's Strategy.start drives them: configure_train, every ClientApp, aggregate_train,
    then the ServerApp's centralized evaluation (the engine's). The global model is parameters and buffers."""
    config = parse_experiment(experiment)
    exp = Prepared(build_federation(config), ROUNDS)
    strategy = make_strategy(exp, min_nodes=K)
    strategy.node_clients = {NODE + c: c for c in range(K)}  # what discover() learns from the nodes
    app = client_app(source=lambda settings: exp)
    run_config = {"experiment": experiment_json(experiment)}
    params, buffers = exp.initial_params(), exp.initial_buffers()
    for server_round in range(1, ROUNDS + 1):
        messages = strategy.configure_train(server_round, to_record(params, exp.spec, buffers), ConfigRecord(),
                                            FakeGrid([NODE + c for c in range(K)]))
        replies = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            context = Context(run_id=7, node_id=node, node_config={"partition-id": node - NODE, "num-partitions": K},
                              state=RecordDict(), run_config=run_config)
            replies.append(app(msg, context))
        arrays, _ = strategy.aggregate_train(server_round, reversed(replies))  # arrival order must not matter
        if arrays is not None:
            params, buffers = read_record(arrays, exp.spec)
        strategy.record_evaluation(server_round, exp.evaluate(params, server_round - 1, buffers))
    if result is not None:
        result["buffers"] = buffers
    return strategy.history


@pytest.mark.parametrize("model", [{"name": "logistic"},
                                   {"name": "resnet20", "params": {"width": 4, "blocks": 1}}])  # batch norm
def test_engine_and_flower_round_records_agree_field_by_field(model):
    experiment = {**EXPERIMENT, "model": model}
    engine_end, flower_end = {}, {}
    engine, flower = engine_history(experiment, engine_end), flower_history(experiment, flower_end)
    assert len(engine) == len(flower) == ROUNDS
    assert list(engine_end["buffers"]) == list(flower_end["buffers"])  # the global buffers travel with the model
    for name, value in engine_end["buffers"].items():
        assert torch.allclose(flower_end["buffers"][name].double(), value.double(), rtol=1e-4, atol=1e-5), name
    if model["name"] == "resnet20":
        assert int(engine_end["buffers"]["stem.1.num_batches_tracked"]) > 0
    for e, f in zip(engine, flower):
        for key in ("round", "sampled", "malicious", "selected", "flagged", "precision", "recall", "applied"):
            assert f[key] == e[key], (e["round"], key, e[key], f[key])
        assert len(e["sampled"]) == 6 and e["malicious"] == [4]  # the shared rounding; the forced attacker
        assert len(e["flagged"]) == 2
        assert f["update_norms"] == pytest.approx(e["update_norms"], rel=1e-4)
        assert f["clean_accuracy"] == pytest.approx(e["clean_accuracy"], abs=1e-9)
        assert f["attack_success_rate"] == pytest.approx(e["attack_success_rate"], abs=1e-9)
        assert f["loss"] == pytest.approx(e["loss"], rel=1e-4)
        assert f["flips"] == e["flips"]
    assert any(4 in e["flagged"] for e in engine), "the scenario should exercise flagging the attacker"
