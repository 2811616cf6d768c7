"""Initialisation that cannot be wrong: every parameter and buffer of a built model is what PyTorch's own
construction gives (issue 17 item 1: batch-norm statistics, norms, embeddings and constant buffers used
to be uninitialised memory).

Deterministic inits must equal PyTorch's construction exactly; random inits must follow the same
distribution; the model depends only on the seed; the caller's global RNG state is untouched.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import poisonlab.models.build as build
from poisonlab.errors import ConfigError
from poisonlab.models import MODELS, build_seeded, make_model
from poisonlab.registry import Registry


class Mixed(nn.Module):
    """Every layer type the issue names, plus a constant buffer; the forward touches all of them."""

    def __init__(self, input_shape, num_classes, vocab: int = 2000):
        super().__init__()
        c = input_shape[0]
        self.conv1d = nn.Conv1d(c, 6, 3)
        self.bn1d = nn.BatchNorm1d(6)
        self.conv2d = nn.Conv2d(c, 8, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.embed = nn.Embedding(vocab, 64)
        self.fc = nn.Linear(8 + 6 + 64, num_classes)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, -3.25]))

    def forward(self, x):
        a = self.gn(self.bn2d(self.conv2d(x))).mean((2, 3))
        b = self.bn1d(self.conv1d(x.flatten(2))).mean(2)
        e = self.embed(torch.zeros(len(x), dtype=torch.long))
        return self.fc(torch.cat([self.ln(a), b, e], 1)) * self.scale[0]


SHAPE = (3, 8, 8)
DETERMINISTIC = ["bn1d.weight", "bn1d.bias", "bn1d.running_mean", "bn1d.running_var", "bn1d.num_batches_tracked",
                 "bn2d.weight", "bn2d.bias", "bn2d.running_mean", "bn2d.running_var", "bn2d.num_batches_tracked",
                 "gn.weight", "gn.bias", "ln.weight", "ln.bias", "scale"]


def pytorch_reference() -> Mixed:
    """Mixed as PyTorch itself constructs it (in a forked stream, so the test leaves the global state alone)."""
    with torch.random.fork_rng(devices=[]):
        return Mixed(SHAPE, 10)


@pytest.fixture
def registered(monkeypatch):
    """'mixed' registered as a user would, in a fresh MODELS that make_model sees; the global one is untouched."""
    fresh = Registry("model")
    fresh.register("mixed", reference="test model")(Mixed)
    monkeypatch.setattr(build, "MODELS", fresh)
    return fresh


def test_deterministic_inits_equal_pytorch_construction(registered):
    built = make_model("mixed", SHAPE, 10, seed=3).state_dict()
    reference = pytorch_reference().state_dict()
    assert built.keys() == reference.keys()
    for key in DETERMINISTIC:
        assert built[key].dtype == reference[key].dtype and torch.equal(built[key], reference[key]), key
    assert torch.equal(built["bn2d.running_var"], torch.ones(8)) and torch.equal(built["bn2d.weight"], torch.ones(8))
    assert torch.equal(built["scale"], torch.tensor([0.5, 2.0, -3.25]))
    assert int(built["bn1d.num_batches_tracked"]) == 0


def test_nothing_non_finite_and_all_on_cpu(registered):
    model = make_model("mixed", SHAPE, 10, seed=0)
    for key, t in model.state_dict().items():
        assert t.device.type == "cpu" and torch.isfinite(t.float()).all(), key
    assert torch.isfinite(model(torch.rand(4, *SHAPE))).all()


@pytest.mark.parametrize("layer", ["conv1d", "conv2d", "fc"])
def test_kaiming_uniform_bounds_as_pytorch(registered, layer):
    # PyTorch's default for Linear/ConvNd: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias the same bound
    module = getattr(make_model("mixed", SHAPE, 10, seed=0), layer)
    w, b = module.weight.detach(), module.bias.detach()
    bound = 1 / math.sqrt(w[0].numel())
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    assert float(w.abs().max()) > 0.8 * bound  # spread over the interval, not a tiny or zero init


def test_embedding_is_standard_normal(registered):
    table = make_model("mixed", SHAPE, 10, seed=0).embed.weight.detach()  # 128,000 draws
    assert abs(float(table.mean())) < 0.02 and abs(float(table.std()) - 1) < 0.02
    reference = pytorch_reference().embed.weight.detach()
    assert abs(float(table.std()) - float(reference.std())) < 0.02


def test_same_seed_same_model_different_seed_different_random_tensors(registered):
    a, b, c = (make_model("mixed", SHAPE, 10, seed=s).state_dict() for s in (5, 5, 6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("conv1d.weight", "conv2d.weight", "fc.weight", "embed.weight"):
        assert not torch.equal(a[key], c[key]), key
    assert all(torch.equal(a[k], c[k]) for k in DETERMINISTIC)


def broken(input_shape, num_classes):
    """Draws from the (forked) global stream, then fails."""
    torch.rand(5)
    raise RuntimeError("factory failed")


def test_global_rng_state_unchanged(registered):
    registered.register("broken", reference="test model")(broken)
    before = torch.random.get_rng_state()
    make_model("mixed", SHAPE, 10, seed=0)
    with pytest.raises(RuntimeError, match="factory failed"):
        make_model("broken", SHAPE, 10, seed=0)  # fails inside the forked stream: the state is restored anyway
    assert torch.equal(before, torch.random.get_rng_state())


def test_build_seeded_from_a_factory_matches_make_model(registered):
    direct = build_seeded(Mixed, SHAPE, 10, seed=2, key="mixed").state_dict()
    named = make_model("mixed", SHAPE, 10, seed=2).state_dict()
    assert all(torch.equal(direct[k], named[k]) for k in named)
    other = build_seeded(Mixed, SHAPE, 10, seed=2, params={"vocab": 50})  # default key: module:qualname
    assert other.embed.num_embeddings == 50 and torch.isfinite(other.embed.weight).all()


def test_factory_returning_a_non_module_is_one_line():
    with pytest.raises(ConfigError, match="model factory 'bad' returned dict; accepted: a torch.nn.Module"):
        build_seeded(lambda input_shape, num_classes: {}, (4,), 2, key="bad")


def test_the_test_model_did_not_leak(registered):
    assert "mixed" in registered and "mixed" not in MODELS
