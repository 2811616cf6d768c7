"""CPU versus CUDA: the same experiment on both devices agrees up to float rounding (skipped without CUDA).

Run on a GPU machine with:  pytest tests/test_gpu.py -v   (the first test prints the GPU's name)

What must agree, and how closely (docs/devices.md says why only rounding differs: every random draw is made on
the CPU and moved, so both devices see the same batches, noise and samples):
- centralized training (mlp and cnn on digits, one epoch): parameters within 1e-3, test accuracy within 2 points;
- one federated round (mlp, cnn, and a batch-norm zoo model once federated batch norm is merged): the new global
  parameters within 1e-3 (after up to a few dozen SGD steps per client);
- every aggregator and every update attack on the same (k, d) updates: results within 1e-4 (relative 1e-4), the
  same rows selected;
- a device repeats itself bit for bit: two identical rounds on CUDA give torch.equal parameters
  (torch.use_deterministic_algorithms, device.deterministic).
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS

import pytest
import torch

from poisonlab.config import parse
from poisonlab.device import deterministic, describe, resolve
from poisonlab.fl.aggregators import AGGREGATORS, get as get_rule
from poisonlab.fl.attacks import ATTACKS, get as get_attack
from poisonlab.fl.types import RoundContext

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False): CPU-vs-CUDA agreement"
                                       " is checked on a GPU machine with `pytest tests/test_gpu.py`")

AGGREGATOR_PARAMS = {"krum": {"f": 2}, "multi_krum": {"f": 2}, "bulyan": {"f": 2}, "norm_clip": {"bound": 1.0},
                     "centered_clipping": {"tau": 1.0}, "dp_gaussian": {"bound": 1.0, "sigma": 0.01}}
ATTACK_PARAMS = {"constrain_and_scale": {"bound": 1.0}, "agr_tailored": {"rule": "median"},
                 "alie_opt": {"rule": "median"}, "ipm_opt": {"rule": "median"}}


@pytest.fixture(scope="module", autouse=True)
def deterministic_kernels():
    deterministic(True)
    yield
    deterministic(False)


def test_reports_the_gpu(capsys):
    with capsys.disabled():
        print(f"\nGPU: {describe(resolve('cuda'))}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    assert resolve("auto").type == "cuda"


# ---------------------------------------------------------------- centralized training
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_centralized_training_agrees(model):
    from poisonlab.builders import load_split
    from poisonlab.centralized import run_centralized

    config = parse({"data": {"dataset": "digits"}, "model": {"name": model}, "seed": 3})
    train_set, test_set = load_split(config)
    runs = {dev: run_centralized(train_set, test_set, model, [], train_cfg={"epochs": 1, "batch_size": 64}, seed=3,
                                 device=dev) for dev in ("cpu", "cuda")}
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert next(gpu.model.parameters()).device.type == "cuda"
    for p, q in zip(cpu.model.parameters(), gpu.model.parameters()):
        torch.testing.assert_close(q.cpu(), p, atol=1e-3, rtol=1e-3)
    assert abs(cpu.clean_accuracy - gpu.clean_accuracy) <= 0.02


# ---------------------------------------------------------------- one federated round
def federation(model: str, device: str):
    from poisonlab.builders import build_federation, load_split

    config = parse({"seed": 2, "data": {"dataset": "digits"}, "model": {"name": model},
                    "federated": {"clients": 10, "sample": 1.0, "rounds": 1, "local": {"batch_size": 16, "epochs": 1,
                                                                                        "lr": 0.05}}})
    train_set, test_set = load_split(config)
    return build_federation(config, train_set, test_set, device=device)


def one_round(model: str, device: str):
    fed = federation(model, device)
    start = torch.nn.utils.parameters_to_vector(fed.model.parameters()).detach()
    new, record = fed.round(0, start)
    return new, record


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_one_federated_round_agrees(model):
    cpu, rec_cpu = one_round(model, "cpu")
    gpu, rec_gpu = one_round(model, "cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
    assert rec_cpu.sampled == rec_gpu.sampled and rec_cpu.selected == rec_gpu.selected


def cifar_shaped_round(device: str):
    """One round of resnet20 (batch norm) on 10 clients of random CIFAR-shaped images, from the same seed."""
    from poisonlab.config.federation import FederationConfig
    from poisonlab.data.dataset import Dataset
    from poisonlab.fl.federation import Federation

    g = torch.Generator().manual_seed(7)
    x, y = torch.rand(220, 3, 32, 32, generator=g), torch.arange(220) % 10
    data = Dataset(x, y, tuple("0123456789"))
    clients = [data.subset(torch.arange(i, 200, 10)) for i in range(10)]
    cfg = FederationConfig(rounds=1, sample=1.0, seed=2, quiet=True, local={"batch_size": 10, "lr": 0.05})
    fed = Federation("resnet20", clients, data.subset(torch.arange(200, 220)), cfg, device=device)
    return fed.round(0, torch.nn.utils.parameters_to_vector(fed.model.parameters()).detach())[0]


def test_one_federated_round_agrees_batch_norm_zoo_model():
    torch.testing.assert_close(cifar_shaped_round("cuda").cpu(), cifar_shaped_round("cpu"), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_round_on_cuda_repeats_bit_for_bit(model):
    first, _ = one_round(model, "cuda")
    again, _ = one_round(model, "cuda")
    assert torch.equal(first, again)


# ---------------------------------------------------------------- aggregators and update attacks
def updates_and_context(device: str, k: int = 12, d: int = 2000):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(k, d, generator=g)
    x[:3] += 2.0  # three outlying rows, so robust rules have something to reject
    w = torch.arange(1.0, k + 1)
    g0 = x[3:].mean(dim=0)
    extras = {"server_update": g0.to(device), "base_accuracy": 0.5, "weights": w.to(device),
              "validate": lambda c: 1 / (1 + torch.linalg.vector_norm(c.double(), dim=1))}
    malicious = torch.zeros(k, dtype=torch.bool)
    malicious[:3] = True
    ctx = RoundContext(round=1, num_clients=k, sampled=torch.arange(k, device=device), seed=4,
                       global_params=torch.zeros(d, device=device), malicious=malicious.to(device), extras=extras)
    return x.to(device), w.to(device), ctx


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_each_aggregator_agrees(name):
    rule = get_rule(name, **AGGREGATOR_PARAMS.get(name, {}))
    cpu, gpu = (rule(*updates_and_context(dev)) for dev in ("cpu", "cuda"))
    assert gpu.update.device.type == "cuda"
    torch.testing.assert_close(gpu.update.cpu(), cpu.update, atol=1e-4, rtol=1e-4)
    assert torch.equal(torch.as_tensor(gpu.selected).cpu(), torch.as_tensor(cpu.selected))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_each_update_attack_agrees(name):
    attack = get_attack(name, **ATTACK_PARAMS.get(name, {}))
    out = {}
    for dev in ("cpu", "cuda"):
        x, _, ctx = updates_and_context(dev)
        out[dev] = attack(x, ctx.malicious, ctx)
    assert out["cuda"].device.type == "cuda"
    torch.testing.assert_close(out["cuda"].cpu(), out["cpu"], atol=1e-4, rtol=1e-4)
