"""Scenario configs through the engine: they parse and build; replacement and boosting behave as the math says."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
from pathlib import Path

import pytest
import torch

from poisonlab.fl.attacks import get
from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.local import LocalConfig, flat_params
from poisonlab.fl.adversary import Adversary
from poisonlab.fl.partition import PARTITIONS
from poisonlab.data.synthetic import synthetic
from poisonlab.fl.types import Schedule
from poisonlab.models import make_model
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "fl-*.yaml")))


def scenarios():
    """The benchmark module that maps a YAML config onto the Federation API."""
    spec = importlib.util.spec_from_file_location("fl_attack_scenarios", ROOT / "benchmarks" / "fl_attack_scenarios.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_federation(adversaries, rounds=1, k=8):
    data = synthetic(num_samples=8 * 60 + 200, seed=0)
    train, test = data.split(200 / len(data), seed=0)
    parts = PARTITIONS.get("iid")(train.y, k, 0)
    model = make_model("mlp", train.input_shape, 10, seed=0, hidden=[16])
    cfg = FederationConfig(rounds=rounds, local=LocalConfig(epochs=1, batch_size=20, lr=0.05), quiet=True)
    return Federation(model, [train.subset(p) for p in parts], test, cfg, adversaries=adversaries), model


def test_all_scenario_configs_parse():
    mod = scenarios()
    assert len(CONFIGS) >= 7
    for path in CONFIGS:
        cfg = mod.load_config(path)
        assert cfg.federated is not None and cfg.federated.adversaries()


def test_model_replacement_through_the_engine_lands_on_the_attackers_model():
    seen = {}
    replace = get("model_replacement")

    def recording(updates, malicious, ctx):
        seen["own"] = updates[malicious][0].clone()
        seen["global"] = ctx.global_params.clone()
        return replace(updates, malicious, ctx)

    adv = Adversary(clients=[3], attack=recording, schedule=Schedule(rounds=(0,)), force=True)
    fed, model = small_federation([adv])
    result = fed.run()
    assert torch.allclose(result.params, seen["global"] + seen["own"], atol=1e-5)
    assert torch.equal(seen["global"], flat_params(model))


def test_non_omniscient_wrapper_hides_the_honest_rows():
    mod = scenarios()
    seen = []
    wrapped = mod.without_knowledge(lambda u, m, ctx: seen.append(ctx.omniscient) or u.clone())
    fed, _ = small_federation([Adversary(clients=1, attack=wrapped, force=True)])
    fed.run()
    assert seen == [False]


def test_tutorial_backdoor_short_run_installs_the_backdoor():
    mod = scenarios()
    cfg = mod.load_config(ROOT / "configs" / "fl-tutorial-backdoor.yaml", ["federated.rounds=3"])
    history = mod.build(cfg, attack=True).run().history
    last = history[-1]
    assert last.attack_success_rate >= 0.9 and len(last.malicious) == 2
    norms = torch.tensor(last.update_norms)
    bad = torch.isin(torch.tensor(last.sampled), torch.tensor(last.malicious))
    assert float(norms[bad].min()) > 5 * float(norms[~bad].median())  # boosted x10


def test_dba_config_gives_each_colluder_its_own_piece():
    shared_path("mnist")
    mod = scenarios()
    cfg = mod.load_config(ROOT / "configs" / "fl-mnist-dba.yaml")
    fed = mod.build(cfg)
    assert fed.adversary_clients == [[0], [1], [2], [3]]
    quadrants = [(slice(24, 26), slice(24, 26)), (slice(24, 26), slice(26, 28)),
                 (slice(26, 28), slice(24, 26)), (slice(26, 28), slice(26, 28))]
    for i, (rows, cols) in enumerate(quadrants):
        poisoned = fed.poisoned[i][i]
        relabelled = poisoned.x[(poisoned.y == 0) & (fed.clients[i].y != 0)]
        assert len(relabelled) > 0 and torch.all(relabelled[:, 0, rows, cols] == 1.0)
        others = [q for j, q in enumerate(quadrants) if j != i]
        assert not all(bool(torch.all(relabelled[:, 0, r, c] == 1.0)) for r, c in others)
    assert torch.all(fed.triggered_test.x[:, 0, 24:28, 24:28] == 1.0)


def test_scenarios_share_a_baseline_only_when_their_poisons_match():
    mod = scenarios()
    key = {Path(p).name: mod.baseline_key(mod.load_config(p)) for p in CONFIGS}
    # update attacks on the same federation share one no-attack run...
    assert key["fl-mnist-alie.yaml"] == key["fl-mnist-ipm.yaml"] == key["fl-mnist-min-max.yaml"]
    # ...but a poison sets the triggered test set (ASR) or the flips the baseline is measured on
    assert key["fl-mnist-dba.yaml"] != key["fl-mnist-alie.yaml"]
    assert key["fl-mnist-edge-case.yaml"] not in (key["fl-mnist-alie.yaml"], key["fl-mnist-dba.yaml"])
