"""Any nn.Module, everywhere: a user's factory from YAML ('package.module:factory'), an nn.Module or a
factory in the Python API; seeded per run, the caller's global RNG untouched; every bad spec one line."""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest
import torch
import yaml
from torch import nn

from poisonlab.centralized import run_centralized
from poisonlab.cli import main
from poisonlab.data import load
from poisonlab.errors import ConfigError
from poisonlab.model_spec import build_model

USERMOD = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        '''Not an nn.Sequential: a conv, a ReLU and a head, buffer-free.'''

        def __init__(self, input_shape, num_classes, width=4):
            super().__init__()
            c, h, w = input_shape
            self.features = nn.Conv2d(c, width, 3, padding=1)
            self.classifier = nn.Linear(width * h * w, num_classes)

        def forward(self, x):
            return self.classifier(torch.relu(self.features(x)).flatten(1))


    def factory(input_shape, num_classes, width=4):
        return Net(input_shape, num_classes, width)


    def bn_factory(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * h * w, num_classes))


    def returns_list(input_shape, num_classes):
        return [nn.Linear(2, 2)]


    def wrong_output(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes + 1))


    NOT_CALLABLE = 3
""")

CENTRALIZED = {
    "name": "user-model", "seed": 0, "data": {"dataset": "digits"},
    "model": {"name": "usermod_h:factory", "params": {"width": 3}},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "poison": [{"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {"size": 2}},
                                               "target": 0, "rate": 0.1}}],
    "output": {"report": False},
}
FEDERATED = {
    "name": "user-model-fl", "seed": 0, "data": {"dataset": "digits"},
    "model": {"name": "usermod_h:factory"},
    "federated": {"clients": 4, "rounds": 2, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1}},
    "output": {"report": False},
}


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    """usermod_h.py written in tmp_path, which goes on sys.path (as a user's PYTHONPATH would)."""
    (tmp_path / "usermod_h.py").write_text(USERMOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "usermod_h", raising=False)
    yield tmp_path
    sys.modules.pop("usermod_h", None)


def run_cli(tmp_path, doc: dict, out: str) -> int:
    config = tmp_path / f"{out}.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return main(["run", str(config), "--out", str(tmp_path / out), "--quiet"])


def saved_shapes(run_dir) -> dict:
    from safetensors.torch import load_file

    return {k: tuple(v.shape) for k, v in load_file(str(run_dir / "model.safetensors")).items()}


def final(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["final"]


def test_poisonlab_run_centralized_with_a_user_factory(usermod):
    assert run_cli(usermod, CENTRALIZED, "a") == 0 and run_cli(usermod, CENTRALIZED, "b") == 0
    a, b = final(usermod / "a"), final(usermod / "b")
    assert math.isfinite(a["clean_accuracy"]) and math.isfinite(a["loss"]) and a["attack_success_rate"] is not None
    assert a["clean_accuracy"] == b["clean_accuracy"] and a["loss"] == b["loss"]  # same seed, same run
    assert saved_shapes(usermod / "a") == {"features.weight": (3, 1, 3, 3), "features.bias": (3,),
                                           "classifier.weight": (10, 192), "classifier.bias": (10,)}


def test_poisonlab_run_federated_with_a_user_factory(usermod):
    assert run_cli(usermod, FEDERATED, "a") == 0 and run_cli(usermod, FEDERATED, "b") == 0
    a, b = final(usermod / "a"), final(usermod / "b")
    assert math.isfinite(a["clean_accuracy"]) and math.isfinite(a["loss"])
    assert a["clean_accuracy"] == b["clean_accuracy"] and a["loss"] == b["loss"]
    assert set(saved_shapes(usermod / "a")) == {"features.weight", "features.bias", "classifier.weight",
                                                 "classifier.bias"}


def one_line_error(tmp_path, doc: dict, capsys) -> str:
    capsys.readouterr()
    assert run_cli(tmp_path, doc, "bad") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name, says", [
    ("no_such_module_h:factory", ["model.name", "'no_such_module_h'", "cannot be imported"]),
    ("usermod_h:missing", ["model.name", "usermod_h", "no attribute 'missing'"]),
    ("usermod_h:NOT_CALLABLE", ["model.name", "usermod_h.NOT_CALLABLE", "not callable"]),
    ("usermod_h:returns_list", ["model.name", "usermod_h:returns_list", "returned a list, not an nn.Module"]),
    ("usermod_h:wrong_output", ["model.name", "usermod_h:wrong_output", "outputs (2, 11)", "(2, 10)"]),
    ("usermod_h:", ["model.name", "package.module:factory"]),
])
def test_bad_user_model_is_one_line_with_the_key_path(usermod, capsys, name, says):
    line = one_line_error(usermod, {**CENTRALIZED, "model": {"name": name}}, capsys)
    assert line.startswith("poisonlab: error: model.name: ")
    for word in says:
        assert word in line, line


def test_unknown_factory_param_is_refused_when_the_config_is_checked(usermod, capsys):
    line = one_line_error(usermod, {**CENTRALIZED, "model": {"name": "usermod_h:factory",
                                                             "params": {"depth": 2}}}, capsys)
    assert "model.name" in line and "depth" in line


def test_a_batch_norm_user_model_trains_in_a_federation(usermod):
    """Its running statistics are the global buffers (FedAvg of the clients'), saved with the final model."""
    from safetensors.torch import load_file

    assert run_cli(usermod, {**FEDERATED, "model": {"name": "usermod_h:bn_factory"}}, "bn") == 0
    assert math.isfinite(final(usermod / "bn")["clean_accuracy"])
    saved = load_file(str(usermod / "bn" / "model.safetensors"))
    assert float(saved["1.running_mean"].abs().sum()) > 0  # trained statistics, not the initial zeros
    assert int(saved["1.num_batches_tracked"]) > 0


def tiny_net(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8), nn.ReLU(), nn.Linear(8, num_classes))


@pytest.fixture(scope="module")
def digits():
    return load("digits").split(0.2, seed=0)


def test_run_centralized_takes_a_module_or_a_factory(digits):
    train_set, test_set = digits
    instance = tiny_net(train_set.input_shape, train_set.num_classes)
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    cfg = {"epochs": 1, "batch_size": 64}
    flip = [{"name": "label_flip", "params": {"source": 7, "target": 1, "fraction": 0.5}}]
    by_module = run_centralized(train_set, test_set, instance, flip, train_cfg=cfg)
    by_factory = run_centralized(train_set, test_set, tiny_net, flip, train_cfg=cfg)
    again = run_centralized(train_set, test_set, tiny_net, flip, train_cfg=cfg)
    assert all(torch.equal(before[k], v) for k, v in instance.state_dict().items())  # the caller's copy untouched
    assert by_module.model is not instance and by_module.clean_model is not instance
    for r in (by_module, by_factory):
        assert math.isfinite(r.clean_accuracy) and isinstance(r.model[1], nn.Linear)
    assert by_factory.clean_accuracy == again.clean_accuracy  # a factory is seeded: same seed, same run


def test_clean_model_of_another_architecture_is_refused_with_concat(digits):
    train_set, test_set = digits
    other = build_model("logistic", train_set.input_shape, train_set.num_classes)
    with pytest.raises(ConfigError, match="architecture"):
        run_centralized(train_set, test_set, tiny_net, [], train_cfg={"epochs": 1}, clean_model=other)


def test_factory_is_seeded_and_the_callers_rng_is_restored():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_model(tiny_net, (1, 8, 8), 10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b, c = build_model(tiny_net, (1, 8, 8), 10, seed=1), build_model(tiny_net, (1, 8, 8), 10, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[1].weight, c[1].weight)


def test_federation_takes_a_factory(digits):
    from poisonlab.fl.federation import Federation, FederationConfig

    train_set, test_set = digits
    clients = [train_set.subset(torch.arange(i, len(train_set), 3)) for i in range(3)]
    fed = Federation(tiny_net, clients, test_set, FederationConfig(rounds=1, quiet=True))
    assert isinstance(fed.model, nn.Sequential) and fed.model[1].in_features == 64


def test_module_instance_with_params_and_non_module_specs_are_refused():
    with pytest.raises(ConfigError, match="nn.Module instance"):
        build_model(tiny_net((1, 8, 8), 10), (1, 8, 8), 10, hidden=3)
    with pytest.raises(ConfigError, match="accepted"):
        build_model(3, (1, 8, 8), 10)
