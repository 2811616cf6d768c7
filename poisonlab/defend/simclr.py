"""SimCLR's contrastive loss and its image views, written with torch (no torchvision): DBD's self-supervised stage.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020. A batch of n images gives 2n views (two random augmentations each); every view is an anchor whose
one positive is its row's other view and whose negatives are the 2n - 2 others. With z the L2-normalised
projections, the NT-Xent loss of anchor i with positive j is

    l(i, j) = -log( exp(z_i . z_j / t) / sum_{k != i} exp(z_i . z_k / t) )

averaged over all 2n anchors (the paper's eq. 1 and its Algorithm 1), temperature t (DBD: 0.5).

Views: a random resized crop (area share uniform in [min_scale, 1] (DBD: 0.2), aspect ratio log-uniform in
[3/4, 4/3], placed uniformly inside the image, resampled bilinearly to the full size: torchvision's
RandomResizedCrop drawn per row with affine_grid / grid_sample), an optional horizontal flip (DBD's
CIFAR-10 recipe flips; off by default here: a mirrored digit is not a digit of its class), then with
probability 0.8 a brightness and contrast jitter of strength 0.4 (factors uniform in [0.6, 1.4]; contrast
scales each image about its mean), clamped to the batch's original value range. Not written: the saturation
and hue jitter, the random greyscale and the Gaussian blur of DBD's recipe (grey 8x8 to 28x28 digits have no
colour, and a blur of sigma 0.1-2 pixels erases an 8x8 digit).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from poisonlab.errors import ConfigError

JITTER_PROBABILITY = 0.8  # SimCLR / DBD: colour jitter applied with probability 0.8


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two views z1, z2 (n, d) of n rows (L2-normalised projections), mean over the
    2n anchors: the cross-entropy of each view's similarities to the 2n - 1 others, its row's other view the
    class."""
    n = len(z1)
    z = torch.cat([z1, z2])
    logits = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(0, n, device=z.device)])
    return F.cross_entropy(logits, partner)


def crop_boxes(n: int, g: torch.Generator, min_scale: float) -> torch.Tensor:
    """(n, 4) random resized crop boxes (width, height, centre x, centre y) in grid units (the image spans
    [-1, 1]): area share uniform in [min_scale, 1], aspect ratio log-uniform in [3/4, 4/3] (each side capped at
    the image's), the centre uniform where the box stays inside. Drawn on the CPU."""
    area = min_scale + (1 - min_scale) * torch.rand(n, generator=g, device="cpu")
    ratio = torch.exp((torch.rand(n, generator=g, device="cpu") * 2 - 1) * math.log(4 / 3))
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=g, device="cpu") * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=g, device="cpu") * 2 - 1) * (1 - height)
    return torch.stack([width, height, cx, cy], 1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each image of x (n, c, h, w) cropped to its box (crop_boxes' units) and resampled bilinearly to (h, w),
    mirrored left-right where flip (bool, (n,)) is set."""
    width, height, cx, cy = boxes.to(x.device, x.dtype).unbind(1)
    sign = 1.0 - 2.0 * flip.to(x.device, x.dtype)
    zero = torch.zeros_like(width)
    theta = torch.stack([torch.stack([width * sign, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter(x: torch.Tensor, g: torch.Generator, strength: float, low: float, high: float) -> torch.Tensor:
    """Brightness then contrast jitter (factors uniform in [1 - strength, 1 + strength]) on a random 80% of the
    images of x, clamped to [low, high]."""
    n = len(x)
    draws = torch.rand(n, 3, generator=g, device="cpu").to(x.device, x.dtype)
    on = (draws[:, 0] < JITTER_PROBABILITY).to(x.dtype).view(n, 1, 1, 1)
    brightness = (1 + (draws[:, 1] * 2 - 1) * strength).view(n, 1, 1, 1)
    contrast = (1 + (draws[:, 2] * 2 - 1) * strength).view(n, 1, 1, 1)
    bright = x * brightness
    mean = bright.mean((1, 2, 3), keepdim=True)
    moved = (bright - mean) * contrast + mean
    return (on * moved + (1 - on) * x).clamp(low, high)


def simclr_view(x: torch.Tensor, g: torch.Generator, min_scale: float = 0.2, flip: bool = False,
                strength: float = 0.4) -> torch.Tensor:
    """One SimCLR view of each image of x (n, c, h, w): random resized crop, optional flip, brightness and
    contrast jitter (clamped to x's value range); every draw from g on the CPU."""
    if x.dim() != 4:
        raise ConfigError(f"SimCLR views need images; got inputs of shape {tuple(x.shape)[1:]};"
                          f" accepted: images (c, h, w)")
    n = len(x)
    boxes = crop_boxes(n, g, min_scale)
    flips = (torch.rand(n, generator=g, device="cpu") < 0.5) if flip else torch.zeros(n, dtype=torch.bool, device="cpu")
    return jitter(resized_crop(x, boxes, flips), g, strength, float(x.min()), float(x.max()))
