"""Feature consistency towards transformations, FCT, and the sample distinguishment (SD) it drives (Chen, Wu &
Wang, "Effective Backdoor Defense by Exploiting Sensitivity of Poisoned Samples", NeurIPS 2022; official code
github.com/SCLBD/Effective_backdoor_defense): what D-BR (defend/d_br.py) and D-ST (defend/d_st.py) share.

A backdoored model's features of a poisoned sample move much more under a spatial transformation than a clean
sample's do (the transformation breaks the trigger, and the feature falls from the backdoor's cluster back to
the content's). FCT(x) = mean over feature dimensions of (f(x) - f(tau(x)))^2, f the penultimate features
(the input of the last nn.Linear, poisonlab.models.features), tau the official code's default pair: a random
rotation of up to 180 degrees, then a random translation of up to 20% of the height and width (torchvision's
RandomRotation(180) and RandomAffine(translate=(0.2, 0.2)), written here with affine_grid / grid_sample,
zero fill, one seeded draw per sample on the CPU).

SD: the ``clean_ratio`` (alpha_c, 20%) share of rows with the lowest FCT are the clean set D_c, the
``poison_ratio`` (alpha_p, 5%) share with the highest the poisoned set D_p, the rest uncertain (D_u).
The official code first fine-tunes the model with an intra-class loss to sharpen the split; not done here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab.errors import ConfigError, check_range
from poisonlab.models import features
from poisonlab.rng import generator


def random_affine(x: torch.Tensor, g: torch.Generator, degrees: float = 180.0, translate: float = 0.2) -> torch.Tensor:
    """x (n, c, h, w) rotated by an angle uniform in [-degrees, degrees], then shifted by a uniform fraction in
    [-translate, translate] of its width and height (one draw per sample from g on the CPU); zero fill."""
    if x.dim() != 4:
        raise ConfigError(f"FCT transforms images; got inputs of shape {tuple(x.shape)[1:]}; accepted: images (c, h, w)")
    n = len(x)
    angle = (torch.rand(n, generator=g, device="cpu") * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, generator=g, device="cpu") * 2 - 1) * translate * 2  # grid coordinates span 2
    return rotate_shift(x, angle.to(x.device), shift.to(x.device))


def rotate_shift(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x rotated counter-clockwise by angle (radians, (n,)) about its centre, then moved by shift ((n, 2), in
    grid units: 2 = the full width / height, (+x right, +y down)); bilinear, zero fill."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output pixel p samples input pixel R^-1 (p - s): theta = [R^-1 | -R^-1 s], R^-1 a clockwise rotation in
    # grid coordinates (y points down, so a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]])
    inv = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    theta = torch.cat([inv, -(inv @ shift.unsqueeze(-1))], 2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def fct_scores(model: nn.Module, x: torch.Tensor, seed: int, batch_size: int = 512) -> torch.Tensor:
    """FCT(x_i) = mean_d (f(x_i) - f(tau(x_i)))_d^2 for every row (tau: random_affine, seeded by seed)."""
    g = generator(seed, "fct-transform")
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        moved = random_affine(xb, g)
        out.append((features(model, xb) - features(model, moved)).pow(2).mean(1))
    return torch.cat(out) if out else torch.empty(0, device=x.device)


def check_split_ratios(clean_ratio: float, poison_ratio: float) -> tuple[float, float]:
    """SD's two shares, each in (0, 1) and summing below 1 (one-line ConfigErrors); D-BR's and D-ST's parameters."""
    clean = check_range("clean_ratio", clean_ratio, 0.0, 1.0, low_open=True, high_open=True)
    poison = check_range("poison_ratio", poison_ratio, 0.0, 1.0, low_open=True, high_open=True)
    if clean + poison >= 1:
        raise ConfigError(f"clean_ratio + poison_ratio = {clean + poison}; accepted: a sum below 1")
    return clean, poison


@dataclass(frozen=True)
class Split:
    """SD's three sets, as row indices: clean (lowest FCT), poisoned (highest FCT), uncertain (the rest)."""

    clean: torch.Tensor
    poisoned: torch.Tensor
    uncertain: torch.Tensor


def distinguish(scores: torch.Tensor, clean_ratio: float, poison_ratio: float) -> Split:
    """The alpha_c share of rows with the lowest score as clean, the alpha_p share with the highest as poisoned
    (at least one each; ties by index), the rest uncertain."""
    n = len(scores)
    order = torch.sort(scores, stable=True).indices
    n_clean = max(1, int(round(clean_ratio * n)))
    n_poison = max(1, int(round(poison_ratio * n)))
    if n_clean + n_poison > n:
        raise ConfigError(f"clean_ratio + poison_ratio cover {n_clean + n_poison} of {n} rows; accepted: a sum below 1")
    return Split(order[:n_clean], order[n - n_poison:].flip(0), order[n_clean:n - n_poison])
