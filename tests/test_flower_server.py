"""The Flower ServerApp's rounds (run_server) on an in-process grid (tests/flower_grid.py): faults, attackers,
the threat simulation's parity with the built-in engine, checkpoints and resume.

Checks: a node that is not connected, one that never answers (dies mid-round) and one the SuperLink reports
unavailable are each dropped from their round with the reason in the history, the run completes, a node that
comes back (under a new node id) is used again, and a round with fewer valid replies than min-replies is
skipped with the global model unchanged; the settings are validated; the model-replacement scenario (omniscient,
simulated by the server) and a mix of attackers (a non-omniscient ALIE on its node, a colluding scaler on the
server) give the built-in engine's round records and ASR; a run interrupted after round 2 and resumed from its
checkpoint ends with the uninterrupted run's history and model; a diverged run stops with a DivergedError;
Flower's deprecation note is filtered, its other warnings are not.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from poisonlab.errors import ConfigError, DivergedError  # noqa: E402
from poisonlab.flower.apps import client_app, run_server, server_settings  # noqa: E402
from poisonlab.flower.strategy import fault_lines  # noqa: E402
from poisonlab.flower.prepared import Prepared, build_federation, experiment_json, parse_experiment  # noqa: E402
from tests.flower_grid import InProcessGrid, set_task_identity  # noqa: E402

NODE = 1000  # node id of client c is NODE + c
PATCH = {"trigger": {"name": "patch", "params": {"size": 2, "color": [1.0], "position": "bottom-right"}},
         "target": 0, "rate": 0.5}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    set_task_identity(monkeypatch)


def experiment(clients=5, rounds=3, adversary=None, aggregator=None, **federated) -> dict:
    fed = {"clients": clients, "rounds": rounds, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
           "aggregator": aggregator or {"name": "mean"}, **federated}
    if adversary is not None:
        fed["adversary"] = adversary
    return {"name": "server", "seed": 2, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
            "federated": fed}


def prepared(exp: dict) -> Prepared:
    config = parse_experiment(exp)
    return Prepared(build_federation(config), config.federated.rounds)


def flower_run(exp: dict, plan=None, **settings) -> tuple[dict, InProcessGrid]:
    """run_server on an in-process grid of one node per client; returns its outcome and the grid."""
    prep = prepared(exp)
    k = prep.num_clients
    nodes = {NODE + c: {"partition-id": c, "num-partitions": k} for c in range(k)}
    grid = InProcessGrid(client_app(source=lambda s: prep), nodes, {"experiment": experiment_json(exp)}, plan)
    s = {"experiment": experiment_json(exp), "timeout": 5.0, **settings}
    return run_server(grid, s, lambda _: prep), grid


def engine_run(exp: dict) -> tuple[list[dict], torch.Tensor]:
    result = build_federation(parse_experiment(exp)).run()
    return [r.to_dict() for r in result.history], result.params


def assert_same_rounds(engine: list[dict], flower: list[dict]) -> None:
    """The round records agree field by field (norms, accuracy, loss up to float rounding)."""
    assert len(engine) == len(flower)
    for e, f in zip(engine, flower):
        for key in ("round", "sampled", "malicious", "selected", "flagged", "precision", "recall", "applied"):
            assert f[key] == e[key], (e["round"], key, e[key], f[key])
        assert f["update_norms"] == pytest.approx(e["update_norms"], rel=1e-4)
        assert f["clean_accuracy"] == pytest.approx(e["clean_accuracy"], abs=1e-9)
        assert f["loss"] == pytest.approx(e["loss"], rel=1e-4)
        if e["attack_success_rate"] is not None:
            assert f["attack_success_rate"] == pytest.approx(e["attack_success_rate"], abs=1e-9)


# ---------------------------------------------------------------------------- faults
def test_down_silent_and_unavailable_nodes_are_dropped_with_reasons_and_a_returning_node_is_used(caplog):
    plan = {2: {"down": {NODE + 1}, "silent": {NODE + 2}},
            3: {"down": {NODE + 1, NODE + 4}, "add": {2001: {"partition-id": 1, "num-partitions": 5}},
                "silent": {NODE + 2}, "unavailable": {NODE + 3}}}
    with caplog.at_level(logging.WARNING, logger="poisonlab.flower"):
        outcome, grid = flower_run(experiment(), plan, **{"min-replies": 3})
    h = outcome["history"]
    assert [e["round"] for e in h] == [0, 1, 2], "the run completes"
    assert h[0]["dropped"] == [] and h[0]["sampled"] == [0, 1, 2, 3, 4] and h[0]["skipped"] is None
    dropped = {d["client"]: d["reason"] for d in h[1]["dropped"]}
    assert set(dropped) == {1, 2}
    assert "not connected" in dropped[1] and "no reply before the round timeout" in dropped[2]
    assert h[1]["sampled"] == [0, 2, 3, 4] and h[1]["selected"] == [0, 3, 4] and h[1]["applied"] is True
    # round 3: client 1 is back on node 2001 and used; 2 silent, 3 unavailable, 4 down -> 2 valid replies < 3
    dropped = {d["client"]: (d["node"], d["reason"]) for d in h[2]["dropped"]}
    assert set(dropped) == {2, 3, 4}
    assert dropped[3][0] == NODE + 3 and "node unavailable" in dropped[3][1]
    assert 1 in h[2]["sampled"] and h[2]["rejected"] == []
    assert h[2]["applied"] is False and "min-replies=3" in h[2]["skipped"]
    assert h[2]["clean_accuracy"] == h[1]["clean_accuracy"], "a skipped round keeps the global model"
    assert grid.timeouts == [5.0, 5.0, 5.0]
    assert "dropped node 1002 (client 2)" in caplog.text and "round 3 skipped" in caplog.text
    json.dumps(h)  # the history is JSON as written to history.json
    lines = fault_lines(h)  # the run's warnings (report banner)
    assert len(lines) == 2 and lines[0].startswith("Flower round 2: client 1 dropped (its node is not connected)")
    assert "skipped: 2 valid replies" in lines[1]


def test_server_settings_are_validated():
    prep = prepared(experiment(rounds=1))
    for bad, match in [({"timeout": 0}, "timeout=0"), ({"timeout": float("inf")}, "timeout=inf"),
                       ({"min-replies": 0}, "min-replies=0"), ({"min-nodes": 2.5}, "min-nodes=2.5"),
                       ({"checkpoint-every": 1}, "needs a checkpoint-dir"),
                       ({"resume": True}, "resume=true needs a checkpoint-dir"),
                       ({"resume": "yes", "checkpoint-dir": "x"}, "resume='yes'")]:
        with pytest.raises(ConfigError, match=match):
            server_settings(bad, prep)
    opts = server_settings({}, prep)
    assert (opts.timeout, opts.min_nodes, opts.min_replies, opts.checkpoint_every) == (600.0, 5, 1, 0)


# ---------------------------------------------------------------------------- attackers
MODEL_REPLACEMENT = experiment(clients=6, rounds=3, sample=4, adversary={
    "clients": 1, "poison": {"name": "backdoor", "params": PATCH}, "attack": {"name": "model_replacement"},
    "schedule": {"rounds": [1]}, "omniscient": True, "force_participation": True})
MIXED = experiment(clients=7, rounds=2, adversary=[
    {"clients": [1], "attack": {"name": "alie"}, "omniscient": False},
    {"clients": [3, 4], "boost": 2.0, "attack": {"name": "scale", "params": {"gamma": 3.0}}, "omniscient": False}],
    aggregator={"name": "multi_krum", "params": {"f": 2, "m": 3}})


def test_model_replacement_is_simulated_on_the_server_with_the_engines_numbers():
    engine, _ = engine_run(MODEL_REPLACEMENT)
    outcome, _ = flower_run(MODEL_REPLACEMENT)
    flower = outcome["history"]
    assert_same_rounds(engine, flower)
    attacker = flower[1]["malicious"]
    assert flower[1]["simulated"] == attacker and len(attacker) == 1 and flower[0]["simulated"] == []
    # the backdoor lands in the replacement round (on both engines: not a no-op on Flower)
    assert flower[1]["attack_success_rate"] > flower[0]["attack_success_rate"] + 0.3
    assert abs(flower[1]["attack_success_rate"] - engine[1]["attack_success_rate"]) <= 0.02


def test_several_attackers_on_nodes_and_simulated_colluders_match_the_engine():
    engine, engine_params = engine_run(MIXED)
    outcome, _ = flower_run(MIXED)
    flower = outcome["history"]
    assert_same_rounds(engine, flower)
    for entry in flower:
        assert entry["rejected"] == [] and entry["dropped"] == [], "ALIE on its node never crashes"
        assert entry["simulated"] == [3, 4] and entry["malicious"] == [1, 3, 4]
        assert {3, 4} <= set(entry["flagged"]), "the boosted colluders are flagged by Multi-Krum"
    torch.testing.assert_close(outcome["params"], engine_params, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- resume
def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    exp = experiment(rounds=3, aggregator={"name": "audited", "params": {"rule": "median", "exclude_rounds": 0,
                                                                         "reputation": 0.5}},
                     adversary={"clients": [4], "attack": {"name": "scale", "params": {"gamma": 10.0}}})
    full, _ = flower_run(exp)
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="died before round 3"):
        flower_run(exp, {3: {"crash": True}}, **{"checkpoint-every": 1, "checkpoint-dir": ckpt})
    resumed, grid = flower_run(exp, **{"checkpoint-every": 1, "checkpoint-dir": ckpt, "resume": True})
    assert grid.train_round == 1, "only round 3 runs again"
    assert torch.equal(resumed["params"], full["params"])
    assert [e["round"] for e in resumed["history"]] == [0, 1, 2]
    for r, f in zip(resumed["history"], full["history"]):
        assert {k: v for k, v in r.items() if k != "seconds"} == {k: v for k, v in f.items() if k != "seconds"}
    assert any(e["flagged"] for e in full["history"]), "the stateful rule acts (its state is checkpointed)"


def test_a_diverged_run_stops_with_the_round_and_the_likely_cause():
    exp = experiment(rounds=2)
    exp["federated"]["local"]["lr"] = 1e38
    with pytest.raises(DivergedError, match="diverged in round 1"):
        flower_run(exp)


def test_flowers_notes_that_are_not_news_are_filtered_and_its_other_warnings_kept():
    from poisonlab.flower.simulation import _quiet

    _quiet(verbose=False)
    flwr_logger = logging.getLogger("flwr")

    def record(text):
        return logging.LogRecord("flwr", logging.WARNING, __file__, 1, text, (), None)

    assert not flwr_logger.filter(record("DEPRECATED FEATURE: The `run_simulation` function is deprecated"))
    assert not flwr_logger.filter(record("fraction_evaluate is set to 0.0. Federated evaluation will be skipped."))
    assert flwr_logger.filter(record("Node 7 disconnected"))
