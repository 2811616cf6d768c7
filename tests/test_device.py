"""Device selection (poisonlab/device.py), its config key and CLI flag, what a run records, and bf16 precision."""

from __future__ import annotations

import pytest
import torch

from poisonlab.config import parse
from poisonlab.device import available, check_spec, resolve
from poisonlab.errors import ConfigError
from poisonlab.experiment import run_experiment


def test_auto_and_cpu_resolve_here_and_an_absent_device_is_one_line_naming_the_available_ones():
    assert resolve("cpu") == torch.device("cpu")
    assert resolve("auto").type in {"cuda", "mps", "cpu"} and resolve(None) == resolve("auto")
    if not torch.cuda.is_available():
        assert resolve("auto") == torch.device("cpu") or "mps" in available()
        with pytest.raises(ConfigError) as err:
            resolve("cuda:1")
        assert str(err.value) == f"device 'cuda:1' is not available on this machine; available: {', '.join(available())}"


def test_a_misspelt_device_is_refused_with_the_accepted_forms():
    with pytest.raises(ConfigError, match=r"^device='gpu' is not a device; accepted: auto, cpu, cuda, cuda:N, mps$"):
        check_spec("gpu")
    with pytest.raises(ConfigError, match=r"device.*accepted: auto, cpu, cuda, cuda:N, mps"):
        parse({"device": "cuda0"})
    assert parse({"device": "cuda:3"}).device == "cuda:3"  # spelled right: whether it is here is checked at run time
    assert parse({}).device == "auto" and parse({}).precision == "fp32"


def test_metrics_record_the_device_and_precision():
    doc = {"device": "cpu", "data": {"dataset": "digits"}, "model": {"name": "logistic"},
           "train": {"epochs": 1}}
    metrics = run_experiment(parse(doc), quiet=True)
    assert (metrics["device"], metrics["precision"]) == ("cpu", "fp32")
    assert metrics["config"]["device"] == "cpu"


def test_the_cli_flag_overrides_the_config_and_refuses_an_absent_device(tmp_path, capsys):
    from poisonlab.cli import main

    if torch.cuda.is_available():
        pytest.skip("checks the refusal of an absent CUDA device")
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: digits}\nmodel: {name: logistic}\ntrain: {epochs: 1}\n")
    assert main(["run", str(config), "--device", "cuda", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "device 'cuda:0' is not available on this machine; available: cpu" in capsys.readouterr().err


def test_bf16_centralized_training_runs_under_autocast_and_differs_from_fp32():
    from poisonlab.builders import load_split
    from poisonlab.centralized import run_centralized

    config = parse({"data": {"dataset": "digits"}, "model": {"name": "mlp"}})
    train_set, test_set = load_split(config)
    runs = [run_centralized(train_set, test_set, "mlp", [], train_cfg={"epochs": 1}, device="cpu", precision=p)
            for p in ("fp32", "bf16")]
    fp32, bf16 = (torch.nn.utils.parameters_to_vector(r.model.parameters()) for r in runs)
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # the parameters stay float32
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0.05)  # bf16 rounding, not another model
    assert abs(runs[1].clean_accuracy - runs[0].clean_accuracy) <= 0.05


def test_bf16_local_training_takes_the_autograd_program_and_the_reference_engine_refuses_it():
    from poisonlab.fl.local import autograd_program, local_updates
    from poisonlab.fl.program import AutogradProgram
    from poisonlab.config.local import LocalConfig
    from poisonlab.data.dataset import Dataset
    from poisonlab.models import make_model
    from poisonlab.rng import generator

    model = make_model("mlp", (8,), 3, seed=0)
    assert isinstance(autograd_program(model), AutogradProgram)
    g = generator(0, "bf16")
    data = [Dataset(torch.randn(20, 8, generator=g), torch.arange(20) % 3, ("a", "b", "c")) for _ in range(3)]
    start = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    cfg = LocalConfig(epochs=1, batch_size=5, lr=0.1)
    fp32, bf16 = (local_updates(model, start, data, cfg, [generator(0, "c", i) for i in range(3)], precision=p)
                  for p in ("fp32", "bf16"))
    assert not torch.equal(fp32, bf16)
    torch.testing.assert_close(bf16, fp32, atol=0.02, rtol=0.1)

    doc = {"device": "cpu", "precision": "bf16", "data": {"dataset": "digits"}, "model": {"name": "logistic"},
           "federated": {"clients": 3, "rounds": 1}}
    with pytest.raises(ConfigError, match=r"engine 'reference' is the fp32 definition; precision='bf16'"):
        from poisonlab.builders import build_federation, load_split

        config = parse(doc)
        fed = build_federation(config, *load_split(config))
        fed.config = fed.config.model_copy(update={"engine": "reference"})
        fed.run()


def test_flower_gpus_per_client_come_from_the_config_and_need_a_cuda_federation():
    pytest.importorskip("flwr")
    from types import SimpleNamespace

    from poisonlab.config.federation import FederationConfig
    from poisonlab.flower.simulation import client_gpu_share

    on_cpu = SimpleNamespace(device=torch.device("cpu"), config=FederationConfig(client_gpus=0.25))
    with pytest.raises(ConfigError, match=r"^client_gpus=0.25 with the federation on cpu; accepted: client_gpus > 0"
                                          r" with device cuda, 0 with device cpu$"):
        client_gpu_share(on_cpu, None)
    assert client_gpu_share(on_cpu, 0.0) == 0.0  # the call's value wins over the config's
    on_cuda = SimpleNamespace(device=torch.device("cuda", 0), config=FederationConfig(client_gpus=0.25))
    assert client_gpu_share(on_cuda, None) == 0.25
    assert parse({"federated": {"client_gpus": 0.5}}).federated.client_gpus == 0.5
