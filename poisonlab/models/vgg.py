"""vgg11_bn: Simonyan and Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image
Recognition (ICLR), configuration A (11 weight layers) with batch norm after every convolution
(Ioffe and Szegedy 2015), adapted to small images.

The adaptation: a max-pool is applied only while the feature map is at least 2 pixels on its short
side (a 28x28 input keeps 4 of the 5 pools, 8x8 keeps 3), then a global average pool and a small
classifier (linear -> ReLU -> linear ``fc``, no dropout) replace the 4096-wide fully connected layers.
An ``nn.Sequential`` with named children (features, pool, flatten, classifier..., fc), so
``fc`` is the default feature layer. Batch norm means buffers: it trains centralized; the vectorized federated
engine refuses it.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from poisonlab.models.registry import MODELS
from poisonlab.models.shapes import image_input, positive_int

CONFIG_A = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")
"""Configuration A in units of the base width (64): conv widths, and "M" for a 2x2 max-pool."""


def vgg_features(c_in: int, side: int, width: int) -> tuple[nn.Sequential, int]:
    """conv3x3 -> BN -> ReLU per width of CONFIG_A, max-pools while side >= 2; (features, output channels)."""
    layers: list[nn.Module] = []
    for item in CONFIG_A:
        if item == "M":
            if side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            continue
        c_out = item * width
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    return nn.Sequential(*layers), c_in


@MODELS.register("vgg11_bn", reference="Simonyan and Zisserman 2015, Very Deep Convolutional Networks for"
                 " Large-Scale Image Recognition (ICLR), config A with batch norm; small-image classifier")
def vgg11_bn(input_shape, num_classes, width: int = 64, hidden: int = 512) -> nn.Sequential:
    """VGG-11 with batch norm (config A, widths width x (1, 2, 4, 4, 8, 8, 8, 8)), global pool, small classifier."""
    c, h, w = image_input("vgg11_bn", input_shape)
    features, c_out = vgg_features(c, min(h, w), positive_int("vgg11_bn", "width", width))
    hidden = positive_int("vgg11_bn", "hidden", hidden)
    return nn.Sequential(OrderedDict([
        ("features", features), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("hidden", nn.Linear(c_out, hidden)), ("relu", nn.ReLU()), ("fc", nn.Linear(hidden, num_classes))]))
