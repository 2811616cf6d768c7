"""The small built-in models: logistic, mlp, cnn, cnn32.

Every one is an ``nn.Sequential`` whose last module is the classification head (``nn.Linear``), so
its input is the default feature layer detectors and clean-label attacks read (feature_layer.py). No batch
norm and no buffers: all state is parameters, which is what vectorized federated training
(torch.func over stacked parameters) needs.
"""

from __future__ import annotations

import math

from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.registry import MODELS


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
