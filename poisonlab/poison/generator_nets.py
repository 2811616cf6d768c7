"""Small networks and training helpers shared by the generator-trained backdoors (input-aware, LIRA, SSBA).

These attacks learn their trigger: a small convolutional network maps an image to its trigger, trained
against a classifier inside the poison. What they share lives here:
  - ``conv_stack``: a size-preserving stack of 3x3 convolutions (any h x w, no down-sampling), the
    trigger generators' body (the papers use larger encoder-decoders; a small stack keeps CPU training cheap);
  - ``seeded``: a network built and initialised from (seed, keys) with explicit generators (poisonlab/rng.py);
  - ``surrogate``: the classifier trained inside the poison (the registered ``cnn`` model, seeded);
  - ``minibatches``: a seeded plan of mini-batch positions;
  - ``run_frozen``: a trained network applied without gradients, in chunks (batched, no loop over samples).
Everything runs on the CPU: poisoning is data preparation (poisonlab/device.py ``host``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from poisonlab.rng import construction_stream, derive_seed, generator

CHUNK = 512


def conv_stack(in_channels: int, out_channels: int, width: int, depth: int = 3) -> nn.Sequential:
    """depth 3x3 convolutions (padding 1, ReLU between): in_channels -> width -> ... -> out_channels, size kept."""
    layers: list[nn.Module] = []
    c = int(in_channels)
    for _ in range(int(depth) - 1):
        layers += [nn.Conv2d(c, int(width), 3, padding=1), nn.ReLU()]
        c = int(width)
    layers.append(nn.Conv2d(c, int(out_channels), 3, padding=1))
    return nn.Sequential(*layers)


def seeded(build: Callable[[], nn.Module], seed: int, *keys: object) -> nn.Module:
    """build() on the CPU, its parameters drawn from generator(seed, "init", *keys) (PyTorch's default init)."""
    from poisonlab.models.build import init_parameters

    with construction_stream(seed, "init", *keys, "defaults"), torch.device("cpu"):
        net = build()
    init_parameters(net, generator(seed, "init", *keys))
    return net


def surrogate(input_shape: tuple[int, ...], num_classes: int, seed: int, key: str) -> nn.Module:
    """The classifier trained inside a poison: the registered ``cnn`` (square images 4x4 to 28x28), seeded."""
    from poisonlab.models import make_model

    return make_model("cnn", tuple(input_shape), int(num_classes), seed=derive_seed(seed, key, "surrogate"))


def minibatches(n: int, batch: int, epochs: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    """Positions of each mini-batch: a fresh permutation of range(n) per epoch, cut into batches of batch."""
    for _ in range(int(epochs)):
        order = torch.randperm(int(n), generator=g)
        yield from torch.split(order, int(batch))


def run_frozen(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """fn applied to x (n, ...) in chunks of chunk rows without gradients, in float32, cast back to x's dtype."""
    if len(x) == 0:
        return x.clone()
    with torch.no_grad():
        out = [fn(part.to(torch.float32)) for part in torch.split(x, chunk)]
    return torch.cat(out).to(x.dtype)


def freeze(net: nn.Module) -> nn.Module:
    """net in eval mode with every parameter's requires_grad off (returned for chaining)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def rms(v: torch.Tensor) -> torch.Tensor:
    """Per-sample root mean square of v (n, ...): sqrt(mean over all but the first dimension of v^2 + 1e-12).

    The 1e-12 keeps the gradient finite where v is exactly 0 (sqrt's derivative is infinite at 0: two
    saturated sigmoid outputs would otherwise turn a generator's weights into NaN)."""
    return (v.flatten(1).pow(2).mean(dim=1) + 1e-12).sqrt()
