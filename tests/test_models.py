"""Small built-in models: output shapes on each input size, seeded initialisation, no buffers, no global RNG use."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models import MODELS, features, linear_head, make_model

VALID = [(name, shape) for name in ("logistic", "mlp", "cnn") for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32))]
VALID += [("cnn32", (3, 32, 32)), ("logistic", (30,)), ("mlp", (13,))]


@pytest.mark.parametrize("name,shape", VALID)
def test_output_shape(name, shape):
    model = make_model(name, shape, 10, seed=0)
    out = model(torch.zeros(4, *shape))
    assert out.shape == (4, 10) and out.dtype == torch.float32
    _, head = linear_head(model)
    assert isinstance(head, nn.Linear) and head.out_features == 10
    assert features(model, torch.zeros(2, *shape)).shape == (2, head.in_features)


SMALL = ("logistic", "mlp", "cnn", "cnn32")  # the buffer-free built-ins (small.py); the zoo has batch norm


def test_small_models_are_registered():
    assert set(SMALL) <= set(MODELS.names())


@pytest.mark.parametrize("name", SMALL)
def test_seeded_init_no_buffers_no_global_rng(name):
    shape = (3, 32, 32)
    state = torch.random.get_rng_state()
    a, b, c = (make_model(name, shape, 10, seed=s) for s in (1, 1, 2))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    pa, pb, pc = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert list(a.buffers()) == []
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in a.modules())
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in a.parameters())


def test_init_matches_pytorch_default_bounds():
    # PyTorch default: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform a=sqrt(5)); bias the same bound
    model = make_model("logistic", (1, 8, 8), 10, seed=0)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    bound = 1 / 64 ** 0.5
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    assert float(w.abs().max()) > 0.9 * bound  # spread over the whole interval, not a tiny init
    assert abs(float(w.std()) - bound / 3 ** 0.5) < 0.01  # std of U(-a, a) is a/sqrt(3)


def test_model_errors():
    with pytest.raises(ConfigError, match="model 'cnn32' needs 32x32 images; got 28x28"):
        make_model("cnn32", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match=r"model 'cnn' needs square images \(c, s, s\); got input_shape=\(30,\)"):
        make_model("cnn", (30,), 2)
    with pytest.raises(ConfigError, match="num_classes=1 is too small"):
        make_model("mlp", (4,), 1)
    with pytest.raises(ConfigError, match="model 'cnm' is not known; did you mean 'cnn'"):
        make_model("cnm", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="model 'mlp' does not take parameter 'hiden'; did you mean 'hidden'"):
        make_model("mlp", (4,), 2, hiden=(8,))
    assert make_model("mlp", (4,), 2, hidden=(8, 6))[3].out_features == 6
