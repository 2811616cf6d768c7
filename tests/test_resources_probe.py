"""The memory estimate probes a small registered model on the CPU (resources.probe_model) and a large one on
the meta device: both give the same estimate, the CPU build leaves the global generator alone."""

from __future__ import annotations

import pytest
import torch

from poisonlab import resources
from poisonlab.config.load import parse


@pytest.mark.parametrize("model", [{"name": "mlp", "params": {"hidden": [64]}}, {"name": "cnn"},
                                   {"name": "logistic"}])
def test_the_cpu_probe_gives_the_meta_probes_estimate(model, monkeypatch):
    config = parse({"data": {"dataset": "digits"}, "model": model,
                    "federated": {"clients": 6, "sample": 1.0, "local": {"batch_size": 32}}})
    before = torch.random.get_rng_state()
    on_cpu = resources.estimate(config)
    assert torch.equal(torch.random.get_rng_state(), before)  # the CPU build drew from a forked generator
    monkeypatch.setattr(resources, "REAL_PROBE_BYTES", 0)  # every model probed on the meta device
    on_meta = resources.estimate(config)
    assert on_cpu == on_meta


def test_probe_model_chooses_by_parameter_bytes(monkeypatch):
    config = parse({"data": {"dataset": "digits"}, "model": {"name": "mlp", "params": {"hidden": [64]}}})
    shape = resources.data_shape(config)
    meta = resources.meta_model(config, shape)
    assert next(resources.probe_model(config, shape, meta).parameters()).device.type == "cpu"
    d = sum(p.numel() for p in meta.parameters())
    monkeypatch.setattr(resources, "REAL_PROBE_BYTES", 4 * d - 1)
    assert resources.probe_model(config, shape, meta) is meta
