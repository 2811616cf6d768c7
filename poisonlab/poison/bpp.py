"""BPP: colour-depth reduction with Floyd-Steinberg dithering as the trigger (Wang, Zhai and Ma 2022, CVPR).

Wang et al., "BppAttack: Stealthy and efficient trojan attacks against deep neural networks via image
quantization and contrastive adversarial learning". The trigger quantises each channel to
``levels`` values (the paper's squeeze number: 2^bits levels, default 8 for 3 bits) and spreads the
rounding error with Floyd-Steinberg dithering (7/16 right, 3/16 down-left, 5/16 down, 1/16 down-right),
so the image keeps its look while its fine colour structure becomes the trigger:
    q(v) = the nearest of the L levels k / (L - 1);  for each pixel in raster order: e = v - q(v), spread e.
Batched: the raster scan is a loop over pixel positions with every image and channel at once (no loop
over samples). The paper's second ingredient, contrastive adversarial training of the victim (poisoned
negatives made by a PGD step), changes the training procedure, not the data; it is not reproduced here
(the trigger is used as a dirty-label poison), and docs/poisoning-zoo.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.registry import TRIGGERS
from poisonlab.poison.triggers import Trigger, _batch, _unbatch


def quantise_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """round(x (L - 1)) / (L - 1): x in [0, 1] reduced to L evenly spaced values."""
    return torch.round(x * (levels - 1)) / (levels - 1)


def floyd_steinberg(x: torch.Tensor, levels: int) -> torch.Tensor:
    """x (n, c, h, w) in [0, 1] quantised to levels values with Floyd-Steinberg error diffusion; a new tensor."""
    work = x.to(torch.float64).clone()
    n, c, h, w = work.shape
    for r in range(h):
        for col in range(w):
            old = work[:, :, r, col].clone()
            new = quantise_levels(old, levels).clamp(0.0, 1.0)  # the nearest of the L levels
            work[:, :, r, col] = new
            err = old - new
            if col + 1 < w:
                work[:, :, r, col + 1] += err * (7 / 16)
            if r + 1 < h:
                if col > 0:
                    work[:, :, r + 1, col - 1] += err * (3 / 16)
                work[:, :, r + 1, col] += err * (5 / 16)
                if col + 1 < w:
                    work[:, :, r + 1, col + 1] += err * (1 / 16)
    return work.to(x.dtype)


@TRIGGERS.register("bpp", reference="Wang, Zhai and Ma 2022, BppAttack: image quantization and contrastive "
                                    "adversarial learning (CVPR): the quantisation + dithering trigger")
@dataclass(frozen=True)
class BppTrigger(Trigger):
    """Each channel reduced to levels values (8 = 3 bits, the paper's default), with Floyd-Steinberg dithering."""

    levels: int = 8
    dither: bool = True
    name = "bpp"

    def __post_init__(self):
        if not 2 <= int(self.levels) <= 255:
            raise ConfigError(f"levels={self.levels} is out of range; accepted: 2..255 (8 = 3 bits per channel)")

    def __call__(self, x, generator=None):
        xb, single = _batch(x)
        out = floyd_steinberg(xb, int(self.levels)) if self.dither else quantise_levels(xb.clamp(0, 1), int(self.levels))
        return _unbatch(out, single)
