"""Poison Ink: the trigger drawn along the image's own edges, in the trigger colour (Zhang et al. 2022, IEEE TIP).

Zhang, Chen, Zhang, Zhang, Yu and Zhang, "Poison Ink: Robust and invisible backdoor attack". The trigger
is the image's structure: its edge map, coloured with a fixed trigger colour, is put into the image, so the
trigger follows each image's shape (sample-specific) and survives the augmentations that move pixels.
What is followed here, and what is not:
  - followed: the edge map of each image, coloured with the trigger colour (``color``), dirty-label
    (``backdoor`` with ``trigger: poison_ink``, rate 10% as BackdoorBench);
  - edge detector: Sobel on the BT.601 grey image (replicated border), gradient magnitude divided by 4 (a unit
    step gives 1), thresholded at ``threshold`` into a 0/1 edge map E; the paper uses Canny (which adds
    non-maximum suppression and hysteresis on top of the same gradients);
  - injection: the coloured edges are blended DIRECTLY onto the edge pixels, out = x + strength E (color - x);
    the paper instead trains an injection network (with an extraction network, a discriminator and
    robustness augmentations) that hides the coloured edge image invisibly in the host image. So this
    trigger is visible along the edges (``strength`` trades visibility for learnability); it is not the
    paper's invisibility claim.
Batched: one 2-D convolution over the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.registry import TRIGGERS
from poisonlab.poison.triggers import LUMA, Trigger, _batch, _unbatch, channel_values

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def grey(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w): the image itself when grey, the BT.601 luma of RGB, else the channel mean."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] == 3:
        return (x * torch.tensor(LUMA, dtype=x.dtype).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w): sqrt(gx^2 + gy^2) / 4 of the grey image, Sobel kernels, replicated border (a unit step -> 1)."""
    kx = torch.tensor(SOBEL_X, dtype=x.dtype)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dcol, d/drow
    padded = F.pad(grey(x), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)
    return g.pow(2).sum(dim=1, keepdim=True).sqrt() / 4


def edge_map(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n, 1, h, w) float 0/1: 1 where the Sobel magnitude (unit step = 1) is at least threshold."""
    return (sobel_magnitude(x) >= float(threshold)).to(x.dtype)


def check_edge_colour(obj) -> None:
    """Refuse a threshold <= 0 or a colour value outside [0, 1] in one line, and store a sequence colour as a tuple
    (obj: a frozen dataclass with ``threshold`` and ``color``: the trigger here and poison_ink_network's poison)."""
    if not float(obj.threshold) > 0:
        raise ConfigError(f"threshold={obj.threshold} is out of range; accepted: > 0 (a unit step has magnitude 1)")
    if not isinstance(obj.color, (int, float)):
        object.__setattr__(obj, "color", tuple(float(v) for v in obj.color))
    values = [float(obj.color)] if isinstance(obj.color, (int, float)) else list(obj.color)
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"color={obj.color!r} is out of range; accepted: values in [0, 1]")


@TRIGGERS.register("poison_ink", reference="Zhang et al. 2022, Poison Ink: Robust and invisible backdoor attack "
                                           "(IEEE TIP): coloured edge map, blended directly (no injection network)")
@dataclass(frozen=True)
class PoisonInkTrigger(Trigger):
    """Each image's Sobel edges (magnitude >= threshold) painted toward color by strength."""

    color: float | Sequence[float] = (1.0, 0.0, 0.0)
    threshold: float = 0.25
    strength: float = 0.5
    name = "poison_ink"

    def __post_init__(self):
        check_range("strength", float(self.strength), 0.0, 1.0)
        check_edge_colour(self)

    def __call__(self, x, generator=None):
        xb, single = _batch(x)
        if xb.shape[-1] < 2 or xb.shape[-2] < 2:
            raise ConfigError(f"poison_ink needs images of at least 2x2; got {tuple(xb.shape[-2:])}")
        color = channel_values(self.color, xb.shape[1]).to(xb.dtype).reshape(1, -1, 1, 1)
        edges = edge_map(xb, float(self.threshold))
        return _unbatch(xb + float(self.strength) * edges * (color - xb), single)
