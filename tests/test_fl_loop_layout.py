"""The per-client loop in channels_last (fl/reference.py) and ``engine: auto`` (fl/engine_choice.py), issue #24.

The channels_last loop must train on the same batches as the NCHW loop and the vectorized engine (updates and
batch norm's buffers equal up to float rounding), really in channels_last (the convolution's input is checked),
and be a no-op for non-image inputs. ``auto`` picks by the probe's times with a margin for the vectorized
engine, caches its choice on disk in a versioned JSON file (a damaged or foreign file is ignored), and a run with
``auto`` records its path and gives the same numbers as a run configured with that path.
"""

import json

import pytest
import torch
from torch import nn

from poisonlab.config.local import LocalConfig
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.fl import engine_choice
from poisonlab.fl.buffers import model_buffers
from poisonlab.fl.engine_choice import ENGINES, Choice, candidates, choose, pick, train_with
from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.local import flat_params, local_train
from poisonlab.fl.reference import reference_train
from poisonlab.rng import generator

CLASSES = tuple("0123")
CFG = LocalConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-3)
SIZES = [19, 8, 13]  # padded last batches


def _data(n, shape, seed=0):
    g = generator(seed, "layout-data")
    return Dataset(torch.rand(n, *shape, generator=g), torch.randint(0, 4, (n,), generator=g), CLASSES)


def _clients(shape):
    return [_data(n, shape, seed=i) for i, n in enumerate(SIZES)]


def _gens(k):
    return [generator(0, "local", 0, i) for i in range(k)]


def _cnn():
    """A small conv model with batch norm, its parameters drawn from a seeded generator."""
    g = generator(1, "layout-init")
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_channels_last_loop_equals_nchw_loop_and_vectorized():
    model, clients = _cnn(), _clients((2, 6, 6))
    start = flat_params(model)
    nchw = reference_train(model, start, clients, CFG, _gens(3))
    cl = reference_train(model, start, clients, CFG, _gens(3), channels_last=True)
    vec = local_train(model, start, clients, CFG, _gens(3))
    assert not torch.equal(nchw.updates, torch.zeros_like(nchw.updates))
    torch.testing.assert_close(cl.updates, nchw.updates, rtol=0, atol=2e-5)
    torch.testing.assert_close(vec.updates, cl.updates, rtol=0, atol=2e-5)
    for name in nchw.buffers:
        torch.testing.assert_close(cl.buffers[name].float(), nchw.buffers[name].float(), rtol=0, atol=2e-5)
    assert torch.equal(flat_params(model), start)  # the given model is not changed


def test_channels_last_loop_really_runs_channels_last():
    model, clients = _cnn(), _clients((2, 6, 6))
    seen = []
    model[4].register_forward_pre_hook(lambda m, inp: seen.append(inp[0].is_contiguous(
        memory_format=torch.channels_last) and not inp[0].is_contiguous()))  # copied with the model
    reference_train(model, flat_params(model), clients[:1], CFG, _gens(1), channels_last=True)
    assert seen and all(seen)
    seen.clear()
    reference_train(model, flat_params(model), clients[:1], CFG, _gens(1))
    assert seen and not any(seen)


def test_channels_last_is_a_no_op_for_flat_inputs():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    clients, start = _clients((5,)), flat_params(model)
    a = reference_train(model, start, clients, CFG, _gens(3)).updates
    b = reference_train(model, start, clients, CFG, _gens(3), channels_last=True).updates
    assert torch.equal(a, b)


def test_candidates():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(72, 4))
    assert candidates(mlp, (2, 6, 6)) == ("vectorized", "reference")
    assert candidates(_cnn(), (2, 6, 6)) == ENGINES
    assert candidates(_cnn(), (2, 6, 6), precision="bf16") == ("vectorized",)


@pytest.mark.parametrize("seconds, expected", [
    ({"vectorized": 1.0, "reference": 1.2, "reference_channels_last": 0.9}, "reference_channels_last"),
    ({"vectorized": 1.0, "reference": 0.8, "reference_channels_last": 0.9}, "reference"),
    ({"vectorized": 1.0, "reference": 1.5, "reference_channels_last": 0.97}, "vectorized"),  # within the margin
    ({"vectorized": 1.0, "reference": 1.5}, "vectorized"),
    ({"vectorized": 2.0, "reference": 1.0}, "reference"),
])
def test_pick_prefers_the_vectorized_engine_within_the_margin(seconds, expected):
    assert pick(seconds) == expected


def test_train_with_refuses_a_loop_in_bf16_and_an_unknown_path():
    model, clients = _cnn(), _clients((2, 6, 6))
    with pytest.raises(ConfigError, match="precision fp32"):
        train_with("reference_channels_last", model, flat_params(model), clients, CFG, _gens(3), precision="bf16")
    with pytest.raises(ConfigError, match="accepted: vectorized, reference, reference_channels_last"):
        train_with("fast", model, flat_params(model), clients, CFG, _gens(3))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory and an empty in-memory cache."""
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(engine_choice, "_MEMORY", {})
    return tmp_path / "engine-choice.json"


def test_choice_is_probed_once_cached_on_disk_and_read_back(cache, monkeypatch, capsys):
    model, clients = _cnn(), _clients((2, 6, 6))
    start, buffers = flat_params(model), model_buffers(model)
    first = choose(model, start, clients, CFG, buffers=buffers)
    assert first.source == "probe" and first.engine in ENGINES
    assert set(first.seconds) == set(ENGINES) and all(s > 0 for s in first.seconds.values())
    assert f"engine auto -> {first.engine}" in capsys.readouterr().err  # printed once
    data = json.loads(cache.read_text())
    assert data["format"] == engine_choice.FORMAT and len(data["choices"]) == 1
    assert choose(model, start, clients, CFG, buffers=buffers) is first  # this process: no new probe, no print
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(engine_choice, "_MEMORY", {})  # a new process on the same machine
    monkeypatch.setattr(engine_choice, "probe", lambda *a, **k: pytest.fail("probed again"))
    again = choose(model, start, clients, CFG, buffers=buffers)
    assert again.source == "disk" and again.engine == first.engine and again.seconds == first.seconds

    key = next(iter(data["choices"]))  # another shape (one client fewer) is a new key
    assert engine_choice.shape_key(model, (2, 6, 6), 2, CFG, start.device) != key


@pytest.mark.parametrize("content", ["not json", '{"format": 999, "choices": {}}', "[1, 2]"])
def test_a_damaged_or_foreign_cache_file_is_ignored(cache, content):
    cache.write_text(content)
    model, clients = _cnn(), _clients((2, 6, 6))
    choice = choose(model, flat_params(model), clients, CFG, quiet=True)
    assert choice.source == "probe"
    assert json.loads(cache.read_text())["format"] == engine_choice.FORMAT  # rewritten in the current format


def test_a_cached_path_that_is_no_candidate_is_probed_again(cache):
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 4))
    clients = _clients((2, 6, 6))
    key = engine_choice.shape_key(model, (2, 6, 6), 3, CFG, torch.device("cpu"))
    cache.write_text(json.dumps({"format": engine_choice.FORMAT,
                                 "choices": {key: {"engine": "reference_channels_last", "seconds": {}}}}))
    choice = choose(model, flat_params(model), clients, CFG, quiet=True)
    assert choice.source == "probe" and choice.engine in ("vectorized", "reference")


def _federation(engine, model):
    test = _data(20, (2, 6, 6), seed=9)
    cfg = FederationConfig(rounds=2, local=LocalConfig(epochs=1, batch_size=8, lr=0.05), seed=3, quiet=True,
                           engine=engine)
    return Federation(model, _clients((2, 6, 6)), test, cfg)


@pytest.mark.parametrize("forced", ["vectorized", "reference_channels_last"])
def test_auto_records_its_path_and_equals_a_run_configured_with_it(cache, monkeypatch, forced):
    monkeypatch.setattr(engine_choice, "probe", lambda *a, **k: Choice(forced, {}, "probe"))
    model = _cnn()
    auto = _federation("auto", model).run()
    assert auto.engine == forced
    explicit = _federation(forced, model).run()
    assert explicit.engine == forced
    assert torch.equal(auto.params, explicit.params)
    assert _federation("vectorized", model).run().engine == "vectorized"


def test_channels_last_federation_matches_the_reference_federation():
    model = _cnn()
    cl = _federation("reference_channels_last", model).run()
    ref = _federation("reference", model).run()
    torch.testing.assert_close(cl.params, ref.params, rtol=0, atol=1e-5)


def test_a_config_run_with_auto_records_the_path_in_its_metrics(cache, monkeypatch):
    from poisonlab.config import parse
    from poisonlab.experiment import run_experiment

    monkeypatch.setattr(engine_choice, "probe", lambda *a, **k: Choice("reference", {}, "probe"))
    doc = {"device": "cpu", "data": {"dataset": "digits"}, "model": {"name": "logistic"},
           "federated": {"clients": 2, "rounds": 1, "engine": "auto"}}
    metrics = run_experiment(parse(doc), quiet=True)
    assert metrics["local_engine"] == "reference" and metrics["config"]["federated"]["engine"] == "auto"
    doc["federated"].pop("engine")
    assert run_experiment(parse(doc), quiet=True)["local_engine"] == "vectorized"


def test_flower_refuses_a_path_other_than_the_vectorized_engine():
    from poisonlab.flower.prepared import Prepared

    with pytest.raises(ConfigError, match=r"^federated.engine='auto' runs on the built-in engine only; accepted on"
                                          r" Flower: 'vectorized'$"):
        Prepared(_federation("auto", _cnn()), rounds=1)
    assert Prepared(_federation("vectorized", _cnn()), rounds=1).rounds == 1
