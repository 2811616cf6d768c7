"""Device discipline, checked on any machine: every tensor a run creates is created on the run's device.

The run is asked for device="cpu" explicitly while torch's default device is "meta". A tensor created without
a device then lands on "meta" and the first operation that mixes it with the run's CPU tensors fails loudly
("Tensor on device meta is not on the expected device cpu"); the same line run on a GPU would be a CPU tensor
meeting CUDA ones. Data preparation (loading, splitting, partitioning, poisoning) runs on the host on purpose
(poisonlab/device.py ``host``), so it is not affected by the default device.

Covered: the centralized pipeline with every detector an experiment runs, one federated round with every
aggregator and one with every update attack (all through ``run_experiment``, the path a user takes), and the
two detectors that run outside experiments (canary, provenance) through their ``scan``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from poisonlab.config import parse
from poisonlab.experiment import run_experiment
from poisonlab.fl.aggregators import AGGREGATORS
from poisonlab.fl.attacks import ATTACKS

AGGREGATOR_PARAMS = {"krum": {"f": 1}, "multi_krum": {"f": 1}, "bulyan": {"f": 1}, "norm_clip": {"bound": 1.0},
                     "centered_clipping": {"tau": 1.0}, "dp_gaussian": {"bound": 1.0, "sigma": 0.01}}
ATTACK_PARAMS = {"constrain_and_scale": {"bound": 1.0}}
PATCH = {"name": "patch", "params": {"size": 2, "color": [1.0], "position": "bottom-right"}}
SERVER_DATA = {"fltrust": {"root_size": 40}, "monna": {"root_size": 40}, "validation": {"validation_size": 40}}


@contextlib.contextmanager
def default_device_meta():
    """torch's default device is "meta" inside (restored to the CPU after, also on error)."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def test_the_meta_default_catches_a_tensor_made_without_the_device():
    """The check itself: a CPU run that builds one tensor without a device fails."""
    with default_device_meta(), pytest.raises(RuntimeError, match="meta"):
        torch.ones(3, device="cpu") + torch.zeros(3)


def federated(aggregator: str = "mean", attack: str | None = None, model: str = "mlp") -> dict:
    fed = {"clients": 8, "sample": 1.0, "rounds": 1, "local": {"batch_size": 32},
           "aggregator": {"name": aggregator, "params": AGGREGATOR_PARAMS.get(aggregator, {})},
           "server_data": SERVER_DATA.get(aggregator, {})}
    adversary = {"clients": 3, "poison": {"name": "backdoor", "params": {"trigger": PATCH, "target": 0, "rate": 0.5}}}
    if attack is not None:
        adversary["attack"] = {"name": attack, "params": ATTACK_PARAMS.get(attack, {})}
    fed["adversary"] = adversary
    return {"seed": 1, "device": "cpu", "data": {"dataset": "digits"}, "model": {"name": model}, "federated": fed}


def run_on_meta_default(doc: dict) -> dict:
    config = parse(doc)
    with default_device_meta():
        metrics = run_experiment(config, quiet=True, device="cpu")
    assert metrics["device"] == "cpu"
    return metrics


def test_centralized_pipeline_and_every_experiment_detector():
    doc = {"seed": 0, "device": "cpu", "data": {"dataset": "digits"}, "model": {"name": "cnn"},
           "train": {"epochs": 1, "batch_size": 64},
           "poison": [{"name": "backdoor", "params": {"trigger": PATCH, "target": 0, "rate": 0.1}}],
           "detect": [{"name": "activation_clustering"}, {"name": "anomaly"}, {"name": "spectral_signatures"},
                      {"name": "roni", "params": {"steps": 2}},
                      {"name": "neural_cleanse", "params": {"steps": 4, "samples": 40}},
                      {"name": "strip", "params": {"n_overlays": 4}}, {"name": "spectre"},
                      {"name": "neural_cleanse_filter", "params": {"steps": 4, "samples": 40, "label": 0}},
                      {"name": "sentinet", "params": {"n_targets": 4, "calibration": 20}},
                      {"name": "teco", "params": {"calibration": 20}}, {"name": "scan"}, {"name": "beatrix"},
                      {"name": "cognitive_distillation", "params": {"steps": 2}},
                      {"name": "cognitive_distillation_input", "params": {"steps": 2, "calibration": 20}},
                      {"name": "tabor", "params": {"steps": 4, "samples": 40, "weights": [1, 1, 1, 1, 1, 1]}},
                      {"name": "neo", "params": {"block": 4, "stride": 4}},
                      {"name": "abs", "params": {"steps": 2, "samples": 40, "candidates": 2}},
                      {"name": "deep_inspect", "params": {"per_class": 1, "invert_steps": 2, "steps": 2}},
                      {"name": "neuron_inspect", "params": {"samples": 20}},
                      {"name": "asset", "params": {"vnet_steps": 2}}, {"name": "agpd"}]}
    metrics = run_on_meta_default(doc)
    assert [d["detector"] for d in metrics["detections"]] == [d["name"] for d in doc["detect"]]
    assert 0.0 <= metrics["final"]["clean_accuracy"] <= 1.0


@pytest.mark.parametrize("aggregator", AGGREGATORS.names())
def test_one_round_with_each_aggregator(aggregator):
    metrics = run_on_meta_default(federated(aggregator))
    assert len(metrics["history"]) == 1


@pytest.mark.parametrize("attack", ATTACKS.names())
def test_one_round_with_each_update_attack(attack):
    metrics = run_on_meta_default(federated("median", attack))
    assert len(metrics["history"]) == 1


def test_one_round_of_the_layer_program_cnn():
    """The vectorized engine's grouped-convolution path (plans, masks, stacked params, hand-written backward)."""
    metrics = run_on_meta_default(federated("mean", "scale", model="cnn"))
    assert metrics["history"][0]["applied"]


def test_the_detectors_outside_experiments_canary_and_provenance():
    from poisonlab.data.dataset import Dataset
    from poisonlab.detect import get
    from poisonlab.models import make_model
    from poisonlab.rng import generator

    g = generator(0, "discipline")
    x, y = torch.randn(60, 6, generator=g), torch.arange(60) % 3
    data, validation = Dataset(x[:40], y[:40], ("a", "b", "c")), Dataset(x[40:], y[40:], ("a", "b", "c"))
    model = make_model("mlp", (6,), 3, seed=0)
    sources = ["s1"] * 20 + ["s2"] * 20
    with default_device_meta():
        canary = get("canary", x=x[:5], y=y[:5]).scan(model=model)
        provenance = get("provenance", steps=3).scan(data=data, sources=sources, validation=validation)
    assert canary.scores.device.type == "cpu" and len(canary) == 5
    assert provenance.scores.device.type == "cpu" and len(provenance) == 40
