"""Residual networks for small images: resnet18, preact_resnet18 and the narrow resnet20.

- ``resnet18``: He, Zhang, Ren and Sun 2016, Deep Residual Learning for Image Recognition (CVPR),
  BasicBlock [2, 2, 2, 2] in the CIFAR variant used by BackdoorBench / FLPoison / TrojanZoo: a 3x3
  stride-1 stem and no max-pool; projection shortcuts (1x1 conv + BN, the paper's option B) when
  the shape changes.
- ``preact_resnet18``: He, Zhang, Ren and Sun 2016b, Identity Mappings in Deep Residual Networks
  (ECCV): the same layout with pre-activation blocks (BN -> ReLU -> conv, twice; the shortcut taps
  the pre-activated input when it needs a projection) and the final BN -> ReLU after the last block.
- ``resnet20``: the CIFAR-10 ResNet of He et al. 2016 sec. 4.2: 16/32/64 channels, 3 stages of 3
  BasicBlocks (6n + 2 layers, n = 3), parameter-free shortcuts (stride-2 subsampling and zero
  channel padding, option A), ~0.27M parameters (the paper's Table 6).

Each model is an ``nn.Sequential`` with named children (stem, layer1..., pool, fc): the classifier is
the final child ``fc`` (an ``nn.Linear``), the default feature layer (models/feature_layer.py) as for
the small models. The global average pool makes any input size of at least 8x8 work. Initialisation is PyTorch's default for each
layer (see build.py), not the papers' He-normal. Batch norm means buffers: these models train
centralized; the vectorized federated engine refuses them.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab.models.registry import MODELS
from poisonlab.models.shapes import image_input, positive_int


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a batch norm follows)."""
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class Projection(nn.Sequential):
    """Shortcut when the shape changes, option B of He et al. 2016: 1x1 strided conv -> BN."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class PadShortcut(nn.Module):
    """Parameter-free shortcut, option A of He et al. 2016: subsample by stride, zero-pad the new channels."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), He et al. 2016 Fig. 2."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: type[nn.Module] = Projection):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.shortcut = shortcut(c_in, c_out, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """conv(relu(bn(conv(relu(bn(x)))))) + shortcut, He et al. 2016b Fig. 4(e) (full pre-activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), conv3x3(c_out, c_out)
        self.project = stride != 1 or c_in != c_out
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if self.project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + self.shortcut(pre if self.project else x)


def stage(block, c_in: int, c_out: int, blocks: int, stride: int, **kw) -> nn.Sequential:
    """blocks residual blocks; the first changes the width and applies the stride."""
    return nn.Sequential(*(block(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, **kw)
                           for i in range(blocks)))


def residual_net(stem: nn.Module, stages: list[nn.Sequential], tail: list[nn.Module], width_out: int,
                 num_classes: int) -> nn.Sequential:
    """stem -> layer1..layerN -> [tail] -> global average pool -> flatten -> fc."""
    parts = [("stem", stem)] + [(f"layer{i + 1}", s) for i, s in enumerate(stages)]
    parts += [(f"post{i}", m) for i, m in enumerate(tail)]
    parts += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(width_out, num_classes))]
    return nn.Sequential(OrderedDict(parts))


def eighteen_layer_stages(block, w: int) -> list[nn.Sequential]:
    """The four stages of an 18-layer ResNet: 2 blocks each, widths w x (1, 2, 4, 8), stride 2 from stage 2."""
    widths = [w, 2 * w, 4 * w, 8 * w]
    return [stage(block, c_in, c_out, 2, 1 if i == 0 else 2)
            for i, (c_in, c_out) in enumerate(zip([w] + widths[:-1], widths))]


@MODELS.register("resnet18", reference="He, Zhang, Ren and Sun 2016, Deep Residual Learning for Image Recognition"
                 " (CVPR); CIFAR variant: 3x3 stem, no max-pool")
def resnet18(input_shape, num_classes, width: int = 64) -> nn.Sequential:
    """ResNet-18 for small images: 3x3 stem, BasicBlock [2, 2, 2, 2] of width x (1, 2, 4, 8), batch norm."""
    c, _, _ = image_input("resnet18", input_shape)
    w = positive_int("resnet18", "width", width)
    stem = nn.Sequential(conv3x3(c, w), nn.BatchNorm2d(w), nn.ReLU())
    return residual_net(stem, eighteen_layer_stages(BasicBlock, w), [], 8 * w, num_classes)


@MODELS.register("preact_resnet18", reference="He, Zhang, Ren and Sun 2016b, Identity Mappings in Deep Residual"
                 " Networks (ECCV); CIFAR variant: 3x3 stem, no max-pool")
def preact_resnet18(input_shape, num_classes, width: int = 64) -> nn.Sequential:
    """Pre-activation ResNet-18: 3x3 stem conv, PreActBlock [2, 2, 2, 2], final BN -> ReLU, batch norm."""
    c, _, _ = image_input("preact_resnet18", input_shape)
    w = positive_int("preact_resnet18", "width", width)
    tail = [nn.BatchNorm2d(8 * w), nn.ReLU()]
    return residual_net(conv3x3(c, w), eighteen_layer_stages(PreActBlock, w), tail, 8 * w, num_classes)


@MODELS.register("resnet20", reference="He, Zhang, Ren and Sun 2016, Deep Residual Learning for Image Recognition"
                 " (CVPR), sec. 4.2: the CIFAR-10 ResNet-20 (16/32/64 channels, option-A shortcuts)")
def resnet20(input_shape, num_classes, width: int = 16, blocks: int = 3) -> nn.Sequential:
    """Narrow CIFAR ResNet (6 * blocks + 2 layers): 3 stages of BasicBlocks, width x (1, 2, 4), zero-pad shortcuts.

    blocks=3 is ResNet-20, blocks=1 ResNet-8. One SGD step on a batch of 64 MNIST-sized images takes
    about 0.12 s on 2 CPU threads, about 2 minutes per 60,000-sample epoch.
    """
    c, _, _ = image_input("resnet20", input_shape)
    w = positive_int("resnet20", "width", width)
    n = positive_int("resnet20", "blocks", blocks)
    widths = [w, 2 * w, 4 * w]
    stem = nn.Sequential(conv3x3(c, w), nn.BatchNorm2d(w), nn.ReLU())
    stages = [stage(BasicBlock, c_in, c_out, n, 1 if i == 0 else 2, shortcut=PadShortcut)
              for i, (c_in, c_out) in enumerate(zip([w] + widths[:-1], widths))]
    return residual_net(stem, stages, [], widths[-1], num_classes)
