"""Small model registry: ``make_model(name, input_shape, num_classes, seed)``.

Every model is an ``nn.Sequential`` whose last module is the classification head
(``nn.Linear``), so ``split_head(model)`` gives the feature extractor used by detectors
and clean-label attacks. No batch norm and no buffers: all state is parameters, which is
what vectorized federated training (torch.func over stacked parameters) needs.
Initialisation reproduces PyTorch's default scheme from an explicit generator (models are
built on the meta device first, so the global RNG is never touched).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.registry import Registry
from poisonlab.rng import generator

MODELS = Registry("model")


def make_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0, **params) -> nn.Sequential:
    """Build the named model for samples of input_shape, initialised from seed."""
    input_shape = tuple(int(s) for s in input_shape)
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is too small; accepted: 2 or more")
    with torch.device("meta"):
        model = MODELS.get(name, input_shape=input_shape, num_classes=num_classes, **params)
    _materialize(model)
    init_parameters(model, generator(seed, "init", name))
    return model


def _materialize(model: nn.Module) -> None:
    """Give the meta-device parameters real (uninitialised) CPU storage, in place.

    Built on meta so that no layer draws its default init from the global RNG. Module.to_empty would
    do this too, but its first call imports torch's symbolic-shape machinery (sympy), 0.5 s of a
    command's start-up; empty tensors of the same shapes need none of it.
    """
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.empty(b.shape, dtype=b.dtype)


def init_parameters(model: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Linear/Conv init (kaiming_uniform a=sqrt(5); bias U(+-1/sqrt(fan_in))) from g."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(module.bias, -bound, bound, generator=g)


def split_head(model: nn.Sequential) -> tuple[nn.Sequential, nn.Linear]:
    """(feature extractor, final linear head) of a poisonlab model; shares parameters."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ConfigError(f"model {type(model).__name__} has no final nn.Linear head; accepted: poisonlab models")
    return model[:-1], model[-1]


def _flat_dim(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ConfigError(f"model '{name}' needs square images (c, s, s); got input_shape={input_shape}")
    return input_shape  # type: ignore[return-value]


@MODELS.register("logistic", reference="multinomial logistic regression")
def logistic(input_shape, num_classes) -> nn.Sequential:
    """Multinomial logistic regression: flatten -> linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), num_classes))


@MODELS.register("mlp", reference="multi-layer perceptron, ReLU")
def mlp(input_shape, num_classes, hidden: tuple[int, ...] | list[int] = (64,)) -> nn.Sequential:
    """Flatten -> (linear -> ReLU) per hidden width -> linear."""
    if not isinstance(hidden, (list, tuple)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise ConfigError(f"mlp: hidden={hidden!r} is not valid; accepted: a list of positive integers, e.g. [64]")
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_dim(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


@MODELS.register("cnn", reference="small LeNet-style conv net for small square images (8x8 to 28x28)")
def cnn(input_shape, num_classes, channels: tuple[int, int] | list[int] = (16, 32), hidden: int = 64) -> nn.Sequential:
    """conv3x3(c1) ReLU maxpool2 -> conv3x3(c2) ReLU maxpool2 -> linear(hidden) ReLU -> linear."""
    c, s, _ = _image_shape("cnn", input_shape)
    c1, c2 = (int(v) for v in channels)
    side = s // 4
    if side < 1:
        raise ConfigError(f"model 'cnn' needs images of at least 4x4; got {s}x{s}")
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@MODELS.register("cnn32", reference="conv net for 32x32 colour images (CIFAR-10 scale)")
def cnn32(input_shape, num_classes, hidden: int = 256) -> nn.Sequential:
    """Three conv3x3 blocks (32, 64, 64) with maxpool2 -> linear(hidden) ReLU -> linear."""
    c, s, _ = _image_shape("cnn32", input_shape)
    if s != 32:
        raise ConfigError(f"model 'cnn32' needs 32x32 images; got {s}x{s} (use 'cnn' for small images)")
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
