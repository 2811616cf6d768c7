"""ReFool: reflection triggers (Liu, Ma, Bailey and Lu 2020, ECCV).

Liu et al., "Reflection backdoor: a natural backdoor attack on deep neural networks". A poisoned image
is the clean image plus a *reflection* of another photo, modelled as x_adv = x + k (*) x_R with one of
the paper's three reflection kernels k:
  - "focus"  (both layers in focus):          k = identity,                   x + x_R;
  - "blur"   (reflection out of focus):       k = a Gaussian of std sigma,    x + G_sigma (*) x_R;
  - "ghost"  (double reflection, thick glass): k = a delta(0) + (1 - a) delta(offset), x + a x_R + (1 - a) shift(x_R);
scaled by ``strength`` (the reflection layer's intensity, a free choice in the paper's pipeline) and
clipped to [0, 1]. The reflection photos come from any folder (the paper uses PascalVOC; the tests use
the photos in ../shared/data); each poisoned image gets one drawn uniformly from the generator. It is a
clean-label attack in the paper: use the trigger with ``clean_label_backdoor`` (target-class images,
labels kept); it also works as a dirty-label trigger. The paper's selection of the most effective
reflections by an adversarial search over candidates is not done here (every photo is a candidate).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poisonlab.errors import ConfigError
from poisonlab.poison.registry import TRIGGERS
from poisonlab.poison.triggers import Trigger, _batch, _unbatch

KERNELS = ("focus", "blur", "ghost")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (n, c, h, w) convolved with a separable Gaussian of std sigma (radius 3 sigma, reflect padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:
        k, radius = k[radius - pad:radius + pad + 1] / k[radius - pad:radius + pad + 1].sum(), pad
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (n, c, h, w) moved down by dy and right by dx, zeros shifted in (the ghost copy)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., dy:, dx:] = x[..., :h - dy, :w - dx]
    return out


def reflect(x: torch.Tensor, reflections: torch.Tensor, kernel: str, strength: float, sigma: float,
            ghost_weight: float, offset: tuple[int, int]) -> torch.Tensor:
    """clip(x + strength * k (*) R, 0, 1) for x and its reflections R, both (n, c, h, w); a new tensor."""
    if kernel == "blur":
        layer = gaussian_blur(reflections, sigma)
    elif kernel == "ghost":
        layer = ghost_weight * reflections + (1 - ghost_weight) * shift(reflections, *offset)
    else:
        layer = reflections
    return (x + strength * layer).clamp(0.0, 1.0)


@functools.lru_cache(maxsize=8)
def load_reflections(folder: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """Every image in folder as (n, c, h, w) in [0, 1] (read once per folder and shape)."""
    from poisonlab.data.images import ingest_many, list_images

    paths = list_images(folder)
    if not paths:
        raise ConfigError(f"reflections='{folder}' holds no image PIL can read; accepted: a folder of photos")
    return ingest_many(paths, shape)


@TRIGGERS.register("reflection", reference="Liu, Ma, Bailey and Lu 2020, Reflection backdoor: a natural backdoor "
                                           "attack on deep neural networks (ReFool, ECCV)")
@dataclass(frozen=True)
class ReflectionTrigger(Trigger):
    """A photo from the reflections folder added as a focus / blurred / ghost reflection with strength, clipped."""

    reflections: str
    kernel: str = "blur"
    strength: float = 0.3
    sigma: float = 1.5
    ghost_weight: float = 0.6
    offset: tuple[int, int] = (3, 3)
    name = "reflection"

    def __post_init__(self):
        object.__setattr__(self, "reflections", str(self.reflections))
        object.__setattr__(self, "offset", tuple(int(v) for v in self.offset))
        if self.kernel not in KERNELS:
            raise ConfigError(f"kernel={self.kernel!r} is not known; accepted: {', '.join(KERNELS)}")
        if not 0.0 < float(self.strength) <= 1.0:
            raise ConfigError(f"strength={self.strength} is out of range; accepted: (0, 1]")
        if float(self.sigma) <= 0:
            raise ConfigError(f"sigma={self.sigma} is out of range; accepted: > 0 (pixels)")
        if not 0.0 <= float(self.ghost_weight) <= 1.0:
            raise ConfigError(f"ghost_weight={self.ghost_weight} is out of range; accepted: [0, 1]")
        if len(self.offset) != 2 or min(self.offset) < 0:
            raise ConfigError(f"offset={list(self.offset)} is not valid; accepted: (dy, dx) >= 0")

    def __call__(self, x, generator=None):
        xb, single = _batch(x)
        n, c, h, w = xb.shape
        if max(self.offset) >= min(h, w):
            raise ConfigError(f"offset={list(self.offset)} does not fit {h}x{w} images; accepted: below {min(h, w)}")
        bank = load_reflections(self.reflections, (c, h, w)).to(xb.dtype)
        if generator is None:
            raise ConfigError("the reflection trigger draws a photo per image; it needs a torch.Generator")
        pick = torch.randint(0, len(bank), (n,), generator=generator)
        out = reflect(xb, bank[pick], self.kernel, float(self.strength), float(self.sigma),
                      float(self.ghost_weight), self.offset)
        return _unbatch(out, single)
