"""Nodes that bring their own data (flower/node.py) and a ServerApp that loads only its test set.

Checks against the built-in engine: a node whose npz holds client c's partition replies exactly the
engine's row of client c (honest, and poisoned + attacked for the experiment's adversary, by its name as
role); the server-only experiment evaluates exactly as the engine's and never loads the training split;
bad node configs (missing file, both/neither source, unknown role, wrong shapes, node-data without data,
server data of the wrong size) are one-line errors naming the value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from poisonlab import builders  # noqa: E402
from poisonlab.data.sources import save_npz  # noqa: E402
from poisonlab.errors import ConfigError, DataError  # noqa: E402
from poisonlab.flower import sources  # noqa: E402
from poisonlab.flower.apps import client_app, from_settings  # noqa: E402
from poisonlab.flower.arrays import from_record, to_record  # noqa: E402
from poisonlab.flower.prepared import experiment_json, prepare  # noqa: E402

EXPERIMENT = {"name": "own-data", "seed": 5, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
              "federated": {"clients": 4, "rounds": 2, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
                            "adversary": {"clients": [2], "poison": {"name": "label_flip",
                                                                     "params": {"fraction": 0.5}},
                                          "attack": {"name": "scale", "params": {"gamma": 5}}},
                            "aggregator": {"name": "median"}}}
EXP_JSON = experiment_json(EXPERIMENT)


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)


@pytest.fixture(scope="module")
def engine():
    return prepare(EXP_JSON)


@pytest.fixture(scope="module")
def files(engine, tmp_path_factory):
    """Each client's clean partition and the engine's test set as npz files (what a lab hands each site)."""
    folder = tmp_path_factory.mktemp("sites")
    fed = engine.federation
    paths = {c: save_npz(fed.clients[c], folder / f"site-{c}.npz") for c in range(4)}
    paths["test"] = save_npz(fed.test, folder / "test.npz")
    return paths


def call(app, spec, params, node_config, run_config=None, message_type=MessageType.TRAIN, rnd=1):
    content = RecordDict({"arrays": to_record(params, spec), "config": ConfigRecord({"server-round": rnd})})
    msg = Message(content, dst_node_id=100, message_type=message_type)
    ctx = Context(run_id=7, node_id=100, node_config=node_config, state=RecordDict(),
                  run_config={"experiment": EXP_JSON, **(run_config or {})})
    return app(msg, ctx)


def test_a_node_with_its_partition_as_npz_replies_the_engine_row(engine, files):
    app, g = client_app(), engine.initial_params()
    for client, role in [(0, None), (1, "honest"), (2, "label_flip+scale")]:
        config = {"partition-id": client, "npz": str(files[client]), **({"role": role} if role else {})}
        reply = call(app, engine.spec, g, config)
        expected, n = engine.local_update(g, client, 0)
        torch.testing.assert_close(from_record(reply.content["arrays"], engine.spec) - g, expected,
                                   rtol=1e-5, atol=1e-6)
        assert reply.content["metrics"]["num-examples"] == n == len(engine.federation.clients[client])
    honest_2, _ = engine.local_update(g, 2, 0, malicious=False)
    reply = call(app, engine.spec, g, {"partition-id": 2, "npz": str(files[2]), "role": "honest"})
    torch.testing.assert_close(from_record(reply.content["arrays"], engine.spec) - g, honest_2, rtol=1e-5, atol=1e-6)
    record = call(app, engine.spec, g, {"partition-id": 2, "npz": str(files[2])},
                  message_type="query").content.config_records["node"]
    assert record["role"] == "malicious" and record["adversary"] == "label_flip+scale"


def test_the_server_loads_only_its_test_set_and_evaluates_as_the_engine(engine, files, monkeypatch):
    def no_training_data(config):
        raise AssertionError("the ServerApp loaded the experiment's dataset")

    monkeypatch.setattr(builders, "load_split", no_training_data)
    server = from_settings({"experiment": EXP_JSON, "node-data": True, "test-npz": str(files["test"])})
    assert server.server_only and server.num_clients == 4
    g = engine.initial_params()
    assert server.evaluate(g) == engine.evaluate(g)
    assert [server.sample(r) for r in range(2)] == [engine.sample(r) for r in range(2)]
    assert server.truth(0) == engine.truth(0) == {2}
    with pytest.raises(ConfigError, match="prepared for the ServerApp only"):
        server.local_result(g, 0, 0)


def test_bad_node_and_server_configs_are_one_line_errors(engine, files, tmp_path):
    app, g = client_app(), engine.initial_params()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((10, 3), dtype=np.float32), y=np.arange(10, dtype=np.int64))
    cases = [({"partition-id": 0, "npz": str(tmp_path / "absent.npz")}, DataError, "absent.npz"),
             ({"partition-id": 0, "npz": str(files[0]), "dataset": "digits"}, ConfigError, "names both"),
             ({"partition-id": 0, "data-dir": "/tmp"}, ConfigError, "names neither"),
             ({"partition-id": 0, "npz": str(files[0]), "role": "spy"}, ConfigError, "role 'spy'.*label_flip\\+scale"),
             ({"partition-id": 9, "npz": str(files[0])}, ConfigError, "partition-id=9"),
             ({"npz": str(files[0])}, ConfigError, "no 'partition-id'"),
             ({"partition-id": 0, "npz": str(wrong)}, DataError, "wrong.npz \\(input shape \\(3,\\)"),
             ({"partition-id": 0, "dataset": "digits", "data-params": "[1]"}, ConfigError, "data-params")]
    for config, error, match in cases:
        with pytest.raises(error, match=match):
            call(app, engine.spec, g, config)
    with pytest.raises(ConfigError, match="node-data=true but this node names no data"):
        call(app, engine.spec, g, {"partition-id": 0}, run_config={"node-data": True})
    with pytest.raises(ConfigError, match="needs the server's test set"):
        from_settings({"experiment": EXP_JSON, "node-data": True})
    with pytest.raises(ConfigError, match="node-data='yes'"):
        from_settings({"experiment": EXP_JSON, "node-data": "yes"})
    fltrust = json.loads(EXP_JSON)
    fltrust["federated"]["server_data"] = {"root_size": 50, "validation_size": 0}
    with pytest.raises(ConfigError, match="root set holds 0 samples but federated.server_data.root_size is 50"):
        from_settings({"experiment": json.dumps(fltrust), "node-data": True, "test-npz": str(files["test"])})


def test_a_registered_dataset_with_data_params_is_a_node_source():
    src = sources.data_source({"dataset": "digits", "data-params": "{}"})
    assert src == {"dataset": "digits", "data-params": {}}
    assert len(sources.load_source(src, "node 0")) == 1797
    with pytest.raises(ConfigError, match="takes no data directory"):
        sources.load_source({"dataset": "digits", "data-dir": "/tmp"}, "node 0")
