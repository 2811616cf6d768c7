"""Frequency-domain triggers: FTrojan (Wang et al. 2022, ECCV) and CTRL (Li et al. 2023, ICCV).

Both hide the trigger in chosen DCT coefficients of the image's chroma, invisible in pixel space:
  1. colour images are converted to a luma/chroma space (FTrojan: YUV, BT.601; CTRL: YCbCr, BT.601
     full range); grey images use their single channel;
  2. each ``window`` x ``window`` block of each chosen channel is transformed by the orthonormal 2-D
     DCT-II (as cv2.dct / scipy.fft.dctn(norm="ortho")), C = D X D^T;
  3. ``magnitude`` (in [0, 1] pixel units; FTrojan's 30/255, CTRL's 50/255) is ADDED to the
     coefficients at ``positions`` (row, col) of every block: FTrojan's defaults are a mid and a high
     frequency, (w/2 - 1, w/2 - 1) and (w - 1, w - 1);
  4. inverse DCT, back to RGB, clipped to [0, 1].
Wang et al., "An invisible black-box backdoor attack through frequency domain" (FTrojan) poison the
U and V channels of 32 x 32 blocks. Li et al., "An embarrassingly simple backdoor attack on
self-supervised learning" (CTRL) use the same construction in YCbCr with a larger magnitude; its
setting is self-supervised (contrastive) pre-training, whereas poisonlab trains supervised models,
so here CTRL is its trigger used in a supervised backdoor (documented in docs/poisoning-zoo.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.registry import TRIGGERS
from poisonlab.poison.triggers import Trigger, _batch, _unbatch

#: RGB -> YUV (BT.601), FTrojan's colour space.
RGB_TO_YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]],
                          dtype=torch.float64)
#: RGB -> YCbCr (BT.601 full range, offsets dropped: they cancel in the round trip), CTRL's colour space.
RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                            dtype=torch.float64)
SPACES = {"yuv": RGB_TO_YUV, "ycbcr": RGB_TO_YCBCR}


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n, n): D[k, i] = a_k cos(pi (2i + 1) k / 2n), a_0 = sqrt(1/n), else sqrt(2/n)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def blocks_dct(x: torch.Tensor, window: int, inverse: bool = False) -> torch.Tensor:
    """The 2-D DCT (or its inverse) of every window x window block of x (..., h, w); h and w multiples of window."""
    d = dct_matrix(window).to(x.dtype)
    *lead, h, w = x.shape
    b = x.reshape(*lead, h // window, window, w // window, window).transpose(-3, -2)  # (..., H, W, win, win)
    out = d.T @ b @ d if inverse else d @ b @ d.T
    return out.transpose(-3, -2).reshape(*lead, h, w)


def stamp_frequency(x: torch.Tensor, magnitude: float, positions: Sequence[tuple[int, int]], window: int,
                    channels: Sequence[int], space: str) -> torch.Tensor:
    """Add magnitude to the DCT coefficients at positions of every block of the chosen channels; a new tensor."""
    xb, single = _batch(x)
    n, c, h, w = xb.shape
    if h % window or w % window:
        raise ConfigError(f"window={window} does not tile {h}x{w} images; accepted: a divisor of both sides")
    work = xb.to(torch.float64)
    mix = SPACES[space]
    if c == 3:
        work = torch.einsum("oc,nchw->nohw", mix, work)
    coeffs = blocks_dct(work, window)
    bump = torch.zeros(window, window, dtype=torch.float64)
    for r, col in positions:
        bump[r, col] = magnitude
    tile = bump.repeat(h // window, w // window)
    chosen = [ch for ch in channels if ch < c] if c == 3 else [0]
    coeffs[:, chosen] += tile
    work = blocks_dct(coeffs, window, inverse=True)
    if c == 3:
        work = torch.einsum("oc,nchw->nohw", torch.linalg.inv(mix), work)
    return _unbatch(work.clamp(0.0, 1.0).to(xb.dtype), single)


def _check(magnitude: float, window: int | None, positions, channels) -> None:
    if not 0.0 < float(magnitude) <= 1.0:
        raise ConfigError(f"magnitude={magnitude} is out of range; accepted: (0, 1] (pixel units; 30/255 = 0.118)")
    if window is not None and int(window) < 2:
        raise ConfigError(f"window={window} is out of range; accepted: an int >= 2 (the DCT block side)")
    for ch in channels:
        if ch not in (0, 1, 2):
            raise ConfigError(f"channels={list(channels)} are not valid; accepted: 0 (luma), 1, 2 (chroma)")
    for p in positions or ():
        if len(p) != 2 or min(p) < 0 or (window is not None and max(p) >= int(window)):
            raise ConfigError(f"position {list(p)} is not a coefficient of a {window}x{window} block; accepted: (row, col) in 0..window-1")


@dataclass(frozen=True)
class FrequencyTrigger(Trigger):
    """magnitude added at DCT positions of every window-sized block of the chroma channels (luma on grey)."""

    magnitude: float = 30 / 255
    window: int | None = None
    positions: tuple[tuple[int, int], ...] | None = None
    channels: tuple[int, ...] = (1, 2)
    space = "yuv"
    name = "ftrojan"

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(tuple(int(v) for v in p) for p in self.positions))
        _check(self.magnitude, self.window, self.positions, self.channels)

    def layout(self, h: int, w: int) -> tuple[int, tuple[tuple[int, int], ...]]:
        """(window, positions) for h x w images: window defaults to 32 when it tiles, else the whole image."""
        window = int(self.window) if self.window is not None else (32 if h % 32 == 0 and w % 32 == 0 else h)
        if h != w and self.window is None and (h % window or w % window):
            raise ConfigError(f"{h}x{w} images need an explicit window dividing both sides")
        positions = self.positions or ((window // 2 - 1, window // 2 - 1), (window - 1, window - 1))
        _check(self.magnitude, window, positions, self.channels)
        return window, positions

    def __call__(self, x, generator=None):
        h, w = torch.as_tensor(x).shape[-2:]
        window, positions = self.layout(int(h), int(w))
        return stamp_frequency(x, float(self.magnitude), positions, window, self.channels, self.space)


@TRIGGERS.register("ftrojan", reference="Wang et al. 2022, An invisible black-box backdoor attack through frequency "
                                        "domain (FTrojan, ECCV): DCT bumps in the UV channels")
@dataclass(frozen=True)
class FTrojanTrigger(FrequencyTrigger):
    """FTrojan: +30/255 at a mid and a high DCT frequency of each 32x32 block of U and V (Y on grey images)."""

    name = "ftrojan"


@TRIGGERS.register("ctrl", reference="Li et al. 2023, An embarrassingly simple backdoor attack on self-supervised "
                                     "learning (CTRL, ICCV): DCT bumps in the CbCr channels")
@dataclass(frozen=True)
class CtrlTrigger(FrequencyTrigger):
    """CTRL: +50/255 at a mid and a high DCT frequency of each 32x32 block of Cb and Cr (Y on grey images)."""

    magnitude: float = 50 / 255
    space = "ycbcr"
    name = "ctrl"
