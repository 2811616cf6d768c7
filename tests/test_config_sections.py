"""One definition per config concept: the YAML's sections are the runtime configs, defaults and ranges once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from poisonlab.config import parse
from poisonlab.config.adversary import AdversaryConfig
from poisonlab.config.federation import ENGINE_MEMORY_BUDGET, FederatedTraining, FederationConfig
from poisonlab.config.injection import Injection
from poisonlab.config.local import LocalConfig
from poisonlab.config.schedule import Schedule
from poisonlab.config.schema import AdversarySpec, ExperimentConfig, FederatedSpec
from poisonlab.config.train import TrainConfig
from poisonlab.errors import ConfigError


def test_the_runtime_modules_hand_out_the_config_packages_classes():
    from poisonlab.fl import federation, local, types
    from poisonlab.fl.adversary import Adversary
    from poisonlab.poison import injection
    from poisonlab import training

    assert local.LocalConfig is LocalConfig and types.Schedule is Schedule
    assert federation.FederationConfig is FederationConfig and injection.Injection is Injection
    assert training.TrainConfig is TrainConfig and issubclass(Adversary, AdversaryConfig)


def test_the_yaml_sections_are_the_runtime_configs():
    fields = ExperimentConfig.model_fields
    assert fields["train"].annotation is TrainConfig and fields["injection"].annotation is Injection
    assert FederatedSpec.model_fields["local"].annotation is LocalConfig
    assert AdversarySpec.model_fields["schedule"].annotation is Schedule
    assert issubclass(FederatedSpec, FederatedTraining) and issubclass(FederationConfig, FederatedTraining)
    assert issubclass(AdversarySpec, AdversaryConfig)


def test_yaml_defaults_are_the_runtime_defaults():
    config = parse({"federated": {"adversary": {}}})
    assert config.train == TrainConfig() and config.injection == Injection()
    assert config.federated.local == LocalConfig() and config.federated.adversary.schedule == Schedule()
    shared = set(FederatedTraining.model_fields)
    assert config.federated.model_dump(include=shared) == FederationConfig().model_dump(include=shared)


@pytest.mark.parametrize("build, says", [
    (lambda: LocalConfig(lr=0), "local lr=0 is out of range; accepted: (0.0, inf)"),
    (lambda: LocalConfig(lrr=0.1), "local lrr: unknown key; did you mean 'lr'?"),
    (lambda: TrainConfig(momentum=1.0), "momentum=1.0 is out of range; accepted: [0.0, 1.0)"),
    (lambda: TrainConfig(epochs=0), "epochs=0 is out of range; accepted: [1, 100000]"),
    (lambda: Schedule(start=3, end=1), "schedule: end=1 is before start=3"),
    (lambda: Injection(mode="retrain"), "injection mode 'retrain' is not known; known: concat, fine_tune"),
    (lambda: FederationConfig(sample=0), "sample=0: out of range; accepted: a fraction"),
    (lambda: FederationConfig(sample=1.5), "sample=1.5: out of range"),
    (lambda: FederationConfig(checkpoint_every=2), "checkpoint_every=2 needs a checkpoint_dir"),
    (lambda: FederationConfig(local={"lr": -1}), "local.lr=-1 is out of range"),
    (lambda: FederationConfig(engine="fast"), "engine 'fast' is not known; known: auto, reference, reference_channels_last,"
                                                    " vectorized"),
    (lambda: AdversaryConfig(clients=1.5), "adversary clients=1.5: a fraction of clients must be in [0, 1)"),
])
def test_a_bad_value_from_python_is_a_one_line_config_error(build, says):
    with pytest.raises(ConfigError) as info:
        build()
    assert says in str(info.value) and "\n" not in str(info.value)


def test_the_same_bad_value_in_yaml_keeps_its_key_path():
    with pytest.raises(ConfigError, match=r"^federated\.local\.lr=0: Input should be greater than 0; accepted: \(0\.0, inf\)$"):
        parse({"federated": {"local": {"lr": 0}}})
    with pytest.raises(ConfigError, match=r"^federated\.adversary\.schedule=a mapping: end=1 is before start=3"):
        parse({"federated": {"adversary": {"schedule": {"start": 3, "end": 1}}}})


def test_runtime_configs_are_frozen_and_hashable():
    a, b = FederationConfig(local=LocalConfig(lr=0.1), flips=((7, 1),)), FederationConfig(local=LocalConfig(lr=0.1), flips=((7, 1),))
    assert a == b and hash(a) == hash(b) and len({Schedule(rounds=[1, 2]), Schedule(rounds=(1, 2))}) == 1
    with pytest.raises(Exception):
        a.rounds = 3


def test_adversary_force_is_force_participation():
    from poisonlab.fl.adversary import Adversary

    assert Adversary(clients=1, force=False).force is False and Adversary(clients=1).force is True


def test_builders_pass_every_shared_setting_through(tmp_path):
    from poisonlab.builders import build_adversaries, federation_config

    config = parse({"seed": 3, "federated": {
        "rounds": 4, "sample": 3, "local": {"epochs": 2, "lr": 0.2}, "server_lr": 0.5, "eval_every": 2,
        "checkpoint_every": 2, "adversary": {"clients": [1], "boost": 3.0, "omniscient": False,
                                             "force_participation": False, "schedule": {"rounds": [2]}}}})
    fed = config.federated
    built = federation_config(config, tmp_path, True, None, None)
    assert all(getattr(built, name) == getattr(fed, name) for name in FederatedTraining.model_fields)
    assert built.seed == 3 and built.checkpoint_dir == str(tmp_path / "checkpoints")
    (adversary,), _ = build_adversaries(fed, config.seed)
    assert all(getattr(adversary, name) == getattr(fed.adversary, name) for name in AdversaryConfig.model_fields)


def test_the_engine_memory_budget_default_is_defined_once():
    from poisonlab import resources

    import torch

    from poisonlab.fl.local import engine_budget

    assert FederationConfig().memory_budget is None  # None: from the device
    assert engine_budget(torch.device("cpu")) == ENGINE_MEMORY_BUDGET and resources.ENGINE_MEMORY_BUDGET is ENGINE_MEMORY_BUDGET


def test_builders_import_neither_the_runner_nor_flower():
    path = Path(__file__).resolve().parents[1] / "poisonlab" / "builders.py"
    imported = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and (m.startswith("poisonlab.flower") or m == "poisonlab.experiment")}
