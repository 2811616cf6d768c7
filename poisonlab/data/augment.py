"""Image augmentation on a whole batch at once: random crop with zero padding, then a horizontal flip.

The standard CIFAR recipe of He, Zhang, Ren and Sun 2016 (Deep Residual Learning for Image Recognition,
sec. 4.2, after Lee et al. 2015): "4 pixels are padded on each side, and a 32x32 crop is randomly sampled
from the padded image or its horizontal flip". For sample i with draws (dy_i, dx_i, flip_i), dy and dx
uniform in [-p, p] and flip a fair coin, the output is

    crop[c, r, s] = x[c, r + dy, s + dx]           (zero where r + dy or s + dx leaves the image)
    out[c, r, s]  = crop[c, r, W - 1 - s] if flip else crop[c, r, s]

i.e. a crop of the zero-padded image at offset (p + dy, p + dx), flipped left-right with probability 1/2.
(Flipping before or after the crop gives the same distribution, as dx is symmetric.) (0, 0, False) is the
identity.

Drawing and applying are separate: ``draw`` takes the (dy, dx, flip) of n samples from an explicit
generator, ``apply`` applies given draws to a batch of any leading shape, so tests, centralized training
and both federated engines apply identical draws. ``apply`` has no Python loop over samples: the batch is
padded once, and each output pixel's source index is computed arithmetically and gathered.

Off by default everywhere; leave it off for MNIST-like digits (a mirrored digit is not a digit of its class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poisonlab.errors import ConfigError, DataError


@dataclass(frozen=True)
class Draws:
    """The augmentation of each sample of a batch of leading shape L.

    shift: L + (2,) int64, the crop offset (dy, dx) from the centre, each in [-p, p];
    flip: L bool, whether the crop is mirrored left-right.
    """

    shift: torch.Tensor
    flip: torch.Tensor

    def __getitem__(self, key) -> Draws:
        """The draws of the samples selected by key (indexing the leading dims, as for the batch)."""
        return Draws(self.shift[key], self.flip[key])

    @property
    def shape(self) -> torch.Size:
        """The leading shape L the draws cover."""
        return self.flip.shape


def draw(n: int, generator: torch.Generator, crop_padding: int = 4, flip: bool = True) -> Draws:
    """(dy, dx, flip) of n samples from generator: offsets uniform in [-crop_padding, crop_padding], then fair
    coins when flip. Only what is enabled is drawn (crop_padding=0 and flip=False draw nothing)."""
    if crop_padding < 0:
        raise ConfigError(f"augment crop_padding={crop_padding} is out of range; accepted: [0, 64]")
    p = int(crop_padding)
    shift = (torch.randint(-p, p + 1, (n, 2), generator=generator, device="cpu") if p
             else torch.zeros(n, 2, dtype=torch.long, device="cpu"))
    flips = ((torch.randint(0, 2, (n,), generator=generator, device="cpu") == 1) if flip
             else torch.zeros(n, dtype=torch.bool, device="cpu"))
    return Draws(shift, flips)


def apply(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """The batch x (*L, C, H, W) cropped and flipped by draws (of leading shape L); a new tensor, x untouched."""
    lead = tuple(draws.shape)
    if x.dim() != len(lead) + 3 or tuple(x.shape[:len(lead)]) != lead:
        raise DataError(f"augment (random crop and flip) needs images of shape {lead} + (C, H, W); got a batch of"
                        f" shape {tuple(x.shape)}; accepted: image data (samples of shape (C, H, W))")
    c, h, w = x.shape[-3:]
    flat = x.reshape(-1, c, h, w)
    n = flat.shape[0]
    if n == 0:
        return x.clone()
    p = int(draws.shift.abs().max())  # pad once, by the largest offset drawn (read where the draws are: the CPU)
    shift = draws.shift.reshape(n, 2).to(x.device)
    flips = draws.flip.reshape(n).to(x.device)
    padded = F.pad(flat, (p, p, p, p))  # zeros outside the image
    r = torch.arange(h, device=x.device)
    s = torch.arange(w, device=x.device)
    rows = shift[:, :1] + p + r  # (n, H): source row of each output row
    cols = shift[:, 1:] + p + torch.where(flips[:, None], w - 1 - s, s)  # (n, W): source column, mirrored if flipped
    source = rows[:, :, None] * (w + 2 * p) + cols[:, None, :]  # (n, H, W) flat index into a padded image
    out = padded.reshape(n, c, -1).gather(2, source.reshape(n, 1, h * w).expand(n, c, h * w))
    return out.reshape(x.shape)


def augment(x: torch.Tensor, generator: torch.Generator, crop_padding: int = 4, flip: bool = True) -> torch.Tensor:
    """A batch x (B, C, H, W) augmented with draws taken from generator: apply(x, draw(B, generator, ...))."""
    return apply(x, draw(len(x), generator, crop_padding, flip))


def check_images(sample_shape: tuple[int, ...], where: str) -> None:
    """Refuse augmentation of data whose samples are not images (C, H, W), in one line naming where it was asked."""
    if len(sample_shape) != 3:
        raise ConfigError(f"{where}: random crop and flip need image samples of shape (C, H, W); got samples of"
                          f" shape {tuple(sample_shape)}; accepted: augment null (off) for this data")
