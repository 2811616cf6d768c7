"""WaNet: an imperceptible warping trigger, with its "noise mode" (Nguyen and Tran 2021, ICLR).

Nguyen and Tran, "WaNet - Imperceptible warping-based backdoor attack". The trigger is a fixed,
smooth warp of the image grid:
  1. P: a k x k field of 2-vectors drawn uniformly in [-1, 1], normalised by its mean absolute value;
  2. upsampled to the image size by bicubic interpolation (corners aligned): the flow field M;
  3. the sampling grid G = clip(I + s M / size, -1, 1), I the identity grid in [-1, 1] (x = column,
     y = row), size the image side (the x part divides by the width, the y part by the height: the
     same as the paper's square images);
  4. the warped image = bilinear sampling of x at G (``grid_sample``, corners aligned).
Noise mode: for cross_ratio times as many other training images, G + (uniform [-1, 1] noise) / size
is applied and their labels are KEPT, so the model learns that only the exact warp means the target,
not any warp (this is what makes the trigger hard to reverse-engineer). Defaults are the paper's:
k = 4, s = 0.5, cross_ratio = 2, poisoning rate 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.poison.backdoor import Backdoor
from poisonlab.poison.registry import POISONS, TRIGGERS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import Trigger, _batch, _unbatch
from poisonlab.rng import generator as derive


def flow_field(k: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """The (h, w, 2) flow M: a k x k uniform [-1, 1] field / its mean |.|, upsampled bicubically (corners aligned)."""
    p = torch.rand(1, 2, k, k, generator=g, dtype=torch.float64) * 2 - 1
    p = p / p.abs().mean()
    return F.interpolate(p, size=(h, w), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)


def identity_grid(h: int, w: int) -> torch.Tensor:
    """(h, w, 2) grid whose [..., 0] is the column coordinate and [..., 1] the row, both in [-1, 1]."""
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                                torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    return torch.stack([cols, rows], dim=-1)


def warp_grid(flow: torch.Tensor, strength: float, rescale: float = 1.0) -> torch.Tensor:
    """G = clip((I + s M / size) * rescale, -1, 1) for a flow M of shape (h, w, 2)."""
    h, w = flow.shape[:2]
    size = torch.tensor([w, h], dtype=flow.dtype)
    return ((identity_grid(h, w) + strength * flow / size) * rescale).clamp(-1, 1)


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x (n, c, h, w) sampled bilinearly at grid ((h, w, 2) shared, or (n, h, w, 2) per image); a new tensor."""
    grid = grid.to(x.dtype)
    if grid.dim() == 3:
        grid = grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@TRIGGERS.register("warp", reference="Nguyen and Tran 2021, WaNet - Imperceptible warping-based backdoor attack (ICLR)")
@dataclass(frozen=True)
class WarpTrigger(Trigger):
    """WaNet's fixed warp: a k x k random flow (from seed) upsampled, strength s, applied by bilinear sampling."""

    k: int = 4
    strength: float = 0.5
    rescale: float = 1.0
    seed: int = 0
    name = "warp"

    def __post_init__(self):
        if int(self.k) < 2:
            raise ConfigError(f"k={self.k} is out of range; accepted: an int >= 2 (the control grid side)")
        if float(self.strength) <= 0:
            raise ConfigError(f"strength={self.strength} is out of range; accepted: > 0 (the paper's s = 0.5)")

    def grid(self, h: int, w: int) -> torch.Tensor:
        """The (h, w, 2) sampling grid of this trigger for h x w images (the same for every image)."""
        if int(self.k) > min(h, w):
            raise ConfigError(f"k={self.k} is larger than the {h}x{w} images; accepted: 2..{min(h, w)}")
        flow = flow_field(int(self.k), h, w, derive(int(self.seed), "wanet-flow", h, w))
        return warp_grid(flow, float(self.strength), float(self.rescale))

    def __call__(self, x, generator=None):
        xb, single = _batch(x)
        return _unbatch(warp(xb, self.grid(*xb.shape[-2:])), single)

    def noisy(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Noise mode: each image warped at clip(G + U[-1, 1] / size, -1, 1) with its own noise draw."""
        xb, single = _batch(x)
        n, _, h, w = xb.shape
        noise = (torch.rand(n, h, w, 2, generator=g, dtype=torch.float64) * 2 - 1) / torch.tensor([w, h], dtype=torch.float64)
        return _unbatch(warp(xb, (self.grid(h, w) + noise).clamp(-1, 1)), single)


@POISONS.register("wanet", reference="Nguyen and Tran 2021, WaNet - Imperceptible warping-based backdoor attack (ICLR)")
@dataclass(frozen=True)
class WaNet(Backdoor):
    """Dirty-label warp backdoor plus noise mode: cross_ratio x (poisoned count) other images noise-warped, labels kept."""

    trigger: Trigger | dict | str = "warp"
    target: int | str | dict = 0
    rate: float | None = 0.1
    cross_ratio: float = 2.0
    name = "wanet"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.trigger, WarpTrigger):
            raise ConfigError(f"wanet needs a warp trigger; got '{self.trigger.name}' (use backdoor for other triggers)")
        if float(self.cross_ratio) < 0:
            raise ConfigError(f"cross_ratio={self.cross_ratio} is out of range; accepted: >= 0")

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """The warp backdoor on rate of the data, then noise-mode warps (labels kept) on cross_ratio x as many others."""
        out = super().apply(data, seed)
        others = torch.nonzero(~out.mask).flatten()
        count = min(int(round(float(self.cross_ratio) * int(out.mask.sum()))), len(others))
        cross = choose(others, None, count, derive(seed, "wanet", "cross"), "images for the noise mode")
        x = out.data.x.clone()
        x[cross] = self.trigger.noisy(data.x[cross], derive(seed, "wanet", "noise"))
        mask = out.mask.clone()
        mask[cross] = True
        info = {**out.info, "attack": "wanet", "noise_mode": len(cross)}
        return Poisoned(out.data.replace(x=x, name=f"{data.name}+wanet"), mask, info)
