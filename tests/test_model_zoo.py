"""The model zoo (resnet18, preact_resnet18, resnet20, vgg11_bn): shapes, parameter counts, batch norm, one step.

Parameter counts are for (3, 32, 32) inputs and 10 classes:
- resnet18 11,173,962: the CIFAR ResNet-18 (3x3 stem, projection shortcuts) as reported by the
  CIFAR codebases BackdoorBench and pytorch-cifar use (11.17M).
- resnet20 269,722: He et al. 2016 Table 6 gives 0.27M for the option-A CIFAR ResNet-20.
- preact_resnet18 11,172,170: pytorch-cifar's PreActResNet18 (11,171,146) plus the final
  BN(512) that He et al. 2016b put after the last block (1,024 parameters).
- vgg11_bn 9,493,770: the exact figure of this definition (config A convs with BN, 512 -> 512 -> 10
  classifier); no published reference has this small-image classifier.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models import features, linear_head, make_model
from poisonlab.rng import generator

ZOO = ["resnet18", "preact_resnet18", "resnet20", "vgg11_bn"]
PARAMS_3x32x32_10 = {"resnet18": 11_173_962, "preact_resnet18": 11_172_170, "resnet20": 269_722, "vgg11_bn": 9_493_770}


def batch(shape, n=4, seed=0):
    g = generator(seed, "test-batch")
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", ZOO)
def test_output_shape_finite_and_head(name, shape):
    model = make_model(name, shape, 10, seed=0)
    x, _ = batch(shape, n=2)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert list(dict(model.named_children()))[-1] == "fc"
    name, head = linear_head(model)
    assert name == "fc" and head is model.fc and features(model, x).shape == (2, head.in_features)
    model.eval()
    assert model(x[:1]).shape == (1, 10)  # eval mode: running statistics, batch of one


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count(name):
    model = make_model(name, (3, 32, 32), 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_3x32x32_10[name]


@pytest.mark.parametrize("name", ZOO)
def test_batch_norm_in_train_mode_updates_running_stats(name):
    model = make_model(name, (3, 8, 8), 10, seed=0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    model(batch((3, 8, 8))[0])
    assert all(int(m.num_batches_tracked) == 1 for m in bns)
    assert all(not torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)


@pytest.mark.parametrize("name", ZOO)
def test_one_sgd_step_lowers_the_loss(name):
    shape = (3, 16, 16)
    model = make_model(name, shape, 10, seed=1)
    x, y = batch(shape, n=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    after = nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss.detach()) and after.item() < loss.item()


@pytest.mark.parametrize("name", ZOO)
def test_smallest_input_and_width(name):
    model = make_model(name, (2, 8, 9), 3, seed=0, width=4)
    assert model(batch((2, 8, 9), n=2)[0]).shape == (2, 3)
    with pytest.raises(ConfigError, match=f"model '{name}' needs images of at least 8x8; got 4x4"):
        make_model(name, (3, 4, 4), 10)
    with pytest.raises(ConfigError, match=rf"model '{name}' needs images \(c, h, w\); got input_shape=\(30,\)"):
        make_model(name, (30,), 10)
    with pytest.raises(ConfigError, match=f"model '{name}': width=0 is not valid; accepted: a positive integer"):
        make_model(name, (3, 8, 8), 10, width=0)


def test_resnet20_depth_is_6n_plus_2():
    model = make_model("resnet20", (3, 32, 32), 10, seed=0, blocks=1)  # ResNet-8
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 8
