"""poisonlab's ClientApp called directly with Flower Messages and Contexts (no Ray, no network).

Checks against the built-in engine: an honest node's reply is exactly the engine's local update
of that client; the experiment's non-omniscient malicious client replies the engine's attacked row
(scale x10, computed on its own update only), an omniscient one its unattacked update (the server's
threat simulation attacks it, flower/threat.py); a node-config role/attack override turns an honest partition
malicious; the discovery query answers partition id and role; a bad partition is a ConfigError.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from poisonlab.errors import ConfigError  # noqa: E402
from poisonlab.fl.local import local_updates  # noqa: E402
from poisonlab.flower.apps import client_app  # noqa: E402
from poisonlab.flower.arrays import from_record, to_record  # noqa: E402
from poisonlab.flower.prepared import experiment_json, prepare  # noqa: E402
from poisonlab.rng import generator  # noqa: E402

EXPERIMENT = {"name": "apps", "seed": 3, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
              "federated": {"clients": 4, "rounds": 2, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
                            "adversary": {"clients": [3], "omniscient": False,
                                          "attack": {"name": "scale", "params": {"gamma": 10}}},
                            "aggregator": {"name": "median"}}}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)


def call(app, exp, node_config, message_type=MessageType.TRAIN, rnd=1, experiment=EXPERIMENT):
    params = exp.initial_params()
    content = RecordDict({"arrays": to_record(params, exp.spec), "config": ConfigRecord({"server-round": rnd})})
    msg = Message(content, dst_node_id=100, message_type=message_type)
    ctx = Context(run_id=7, node_id=100, node_config=node_config, state=RecordDict(),
                  run_config={"experiment": experiment_json(experiment)})
    return params, app(msg, ctx)


def engine_rows(exp, rnd=0):
    fed = exp.federation
    gens = [generator(fed.config.seed, "local", rnd, c) for c in range(4)]
    return local_updates(fed.model, exp.initial_params(), fed.clients, fed.config.local, gens)


@pytest.mark.parametrize("omniscient", [False, True])
def test_honest_and_malicious_replies_equal_the_engine_rows(omniscient):
    experiment = {**EXPERIMENT, "federated": {**EXPERIMENT["federated"], "adversary": {
        **EXPERIMENT["federated"]["adversary"], "omniscient": omniscient}}}
    exp = prepare(experiment_json(experiment))
    app = client_app()
    rows = engine_rows(exp)
    for client in range(4):
        g, reply = call(app, exp, {"partition-id": client, "num-partitions": 4}, experiment=experiment)
        update = from_record(reply.content["arrays"], exp.spec) - g
        expected = rows[client] * (10.0 if client == 3 and not omniscient else 1.0)
        torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-6)
        assert reply.content["metrics"]["num-examples"] == len(exp.federation.clients[client])


def test_node_config_role_and_attack_override():
    exp = prepare(experiment_json(EXPERIMENT))
    app = client_app()
    attack = json.dumps({"name": "sign_flip", "params": {}})
    g, reply = call(app, exp, {"partition-id": 0, "num-partitions": 4, "role": "malicious", "attack": attack})
    update = from_record(reply.content["arrays"], exp.spec) - g
    assert torch.dot(update, engine_rows(exp)[0]) < 0  # pointing against its honest update
    g, reply = call(app, exp, {"partition-id": 3, "num-partitions": 4, "role": "honest"})
    torch.testing.assert_close(from_record(reply.content["arrays"], exp.spec) - g, engine_rows(exp)[3],
                               rtol=1e-4, atol=1e-6)


def test_query_reports_partition_and_role():
    exp = prepare(experiment_json(EXPERIMENT))
    _, reply = call(client_app(), exp, {"partition-id": 3, "num-partitions": 4}, message_type="query")
    record = reply.content.config_records["node"]
    assert record["partition-id"] == 3 and record["role"] == "malicious"


def test_bad_partition_and_role_are_config_errors():
    exp = prepare(experiment_json(EXPERIMENT))
    app = client_app()
    for node_config, match in [({"partition-id": 4, "num-partitions": 4}, "partition-id=4"),
                               ({"partition-id": 0, "num-partitions": 5}, "num-partitions=5"),
                               ({"partition-id": 0, "num-partitions": 4, "role": "spy"}, "role 'spy'")]:
        with pytest.raises(ConfigError, match=match):  # Flower's runtime turns it into an error reply
            call(app, exp, node_config)
