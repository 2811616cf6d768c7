"""SIG: a sinusoidal or ramp signal added to the whole image (Barni, Kallas and Tondi 2019, ICIP).

Barni et al., "A new backdoor attack in CNNs by training set corruption without label poisoning":
the trigger is a horizontal signal v added to every row and channel of an image of width m,
    sinusoidal: v(i, j) = delta * sin(2 pi j f / m),      ramp: v(i, j) = j * delta / m,
with j the column index (0-based here, as BackdoorBench's implementation; the paper counts from 1,
a phase shift of one column), then clipped to the valid range [0, 1]. The paper's MNIST setting adds
delta = 20/255 (sinusoid, f = 6) on training images and a stronger delta at test time; BackdoorBench
uses delta = 40/255, f = 6 for both, our default. It is a *clean-label* attack: poison images of the
target class with ``clean_label_backdoor`` (labels kept); it also works as a dirty-label trigger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.registry import TRIGGERS
from poisonlab.poison.triggers import Trigger, _batch, _unbatch

SIGNALS = ("sine", "ramp")


def sig_signal(width: int, delta: float, frequency: float, kind: str = "sine") -> torch.Tensor:
    """The (width,) signal v_j: delta sin(2 pi j f / m) ("sine") or j delta / m ("ramp"), j = 0..m-1."""
    j = torch.arange(width, dtype=torch.float64)
    if kind == "sine":
        v = delta * torch.sin(2 * math.pi * j * frequency / width)
    elif kind == "ramp":
        v = j * delta / width
    else:
        raise ConfigError(f"signal={kind!r} is not known; accepted: {', '.join(SIGNALS)}")
    return v.to(torch.float32)


def stamp_signal(x: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """clip(x + v, 0, 1) with v (w,) added along each row of every channel; x is not modified."""
    xb, single = _batch(x)
    if signal.shape[-1] != xb.shape[-1]:
        raise ConfigError(f"signal has width {signal.shape[-1]}; images are {xb.shape[-1]} wide")
    return _unbatch((xb + signal.to(xb.dtype)).clamp(0.0, 1.0), single)


@TRIGGERS.register("sig", reference="Barni, Kallas and Tondi 2019, A new backdoor attack in CNNs by training set "
                                    "corruption without label poisoning (ICIP): sinusoidal / ramp signal")
@dataclass(frozen=True)
class SigTrigger(Trigger):
    """A horizontal sinusoid (or ramp) of amplitude delta (in [0, 1] pixel units) and frequency f, added and clipped."""

    delta: float = 40 / 255
    frequency: float = 6.0
    signal: str = "sine"
    name = "sig"

    def __post_init__(self):
        if not 0.0 < float(self.delta) <= 1.0:
            raise ConfigError(f"delta={self.delta} is out of range; accepted: (0, 1] (pixel units; 40/255 = 0.157)")
        if float(self.frequency) <= 0:
            raise ConfigError(f"frequency={self.frequency} is out of range; accepted: > 0 (cycles across the width)")
        if self.signal not in SIGNALS:
            raise ConfigError(f"signal={self.signal!r} is not known; accepted: {', '.join(SIGNALS)}")

    def __call__(self, x, generator=None):
        width = torch.as_tensor(x).shape[-1]
        return stamp_signal(x, sig_signal(width, float(self.delta), float(self.frequency), self.signal))
