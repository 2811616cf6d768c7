"""TeCo (Liu, Li, Wu & Feng, "Detecting Backdoors During the Inference Stage Based on Corruption Robustness
Consistency", CVPR 2023).

A clean image's prediction breaks down gradually and at about the same severity whatever the corruption; a
triggered image's prediction is held by the trigger, which some corruptions destroy at once (blur, JPEG on a
sharp patch) while others leave it intact (brightness, contrast), so the severities at which it flips spread
out. For each input and each corruption type, the flip severity is the first severity s in 1..5 whose
corrupted input is predicted differently from the input itself (6 when none is); the score is the standard
deviation of the flip severities over the corruption types (higher = more suspicious). Threshold: the
(1 - ``fpr``) quantile of the clean inputs' scores (the paper reports AUROC only; documented choice).

Corruptions (``corruptions``), built in torch with ImageNet-C's severity parameters (Hendrycks & Dietterich,
ICLR 2019), which the imagecorruptions package TeCo's code calls applies to CIFAR-10 images too: gaussian_noise,
shot_noise, impulse_noise, gaussian_blur (replicate padding, as scipy's 'nearest'), contrast, brightness (added
to every channel; ImageNet-C adds it to the HSV value), pixelate (area downsampling, nearest upsampling; PIL's
box filter in ImageNet-C) and jpeg (PIL's encoder through defend/recompression.py; 1- or 3-channel images).
Left out of the paper's 15: the weather and geometric corruptions (fog, frost, snow, spatter, elastic,
glass/motion/zoom blur, saturate), which need ImageNet-C's image assets or per-pixel loops. Noise is drawn from
seeded CPU generators, so a scan repeats itself.

Where it fails (measured on the tests' 16x16 world): a saturated white corner patch survives every corruption
(replicate padding keeps a corner white under blur), so triggered inputs never flip (score 0) while clean ones
do: AUROC 0.12. A high-frequency checkerboard patch, destroyed by blur and pixelation at low severity and kept
by noise and brightness, is the case the paper describes: AUROC 0.81 with the 8 corruptions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.detect.sentinet import images
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.rng import generator

SEVERITIES = {  # ImageNet-C's parameters (the imagecorruptions package TeCo's code applies), severity 1..5
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60.0, 25.0, 12.0, 5.0, 3.0),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg": (25, 18, 15, 10, 7),
}
NEVER = len(next(iter(SEVERITIES.values()))) + 1  # the flip severity of an input whose prediction never flips


def _noise_g(seed: int, name: str, level: int) -> torch.Generator:
    return generator(seed, "teco", name, level)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian kernel of standard deviation sigma, radius ceil(3 sigma)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64, device="cpu")
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def corrupt(x: torch.Tensor, name: str, level: int, seed: int = 0) -> torch.Tensor:
    """x (n, c, h, w) in [0, 1] corrupted by name at severity level (1..5), clipped to [0, 1]."""
    v = SEVERITIES[name][level - 1]
    if name == "gaussian_noise":
        out = x + v * torch.randn(x.shape, generator=_noise_g(seed, name, level), device="cpu").to(x.device)
    elif name == "shot_noise":
        out = torch.poisson((x.clamp(0, 1) * v).cpu(), generator=_noise_g(seed, name, level)).to(x.device) / v
    elif name == "impulse_noise":
        u = torch.rand(x.shape, generator=_noise_g(seed, name, level), device="cpu").to(x.device)
        out = torch.where(u < v / 2, torch.zeros_like(x), torch.where(u > 1 - v / 2, torch.ones_like(x), x))
    elif name == "gaussian_blur":
        k = gaussian_kernel(v).to(x.device, x.dtype)
        c, r = x.shape[1], (len(k) - 1) // 2
        out = nn.functional.pad(x, (r, r, r, r), mode="replicate")
        out = nn.functional.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        out = nn.functional.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    elif name == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out = (x - mean) * v + mean
    elif name == "brightness":
        out = x + v
    elif name == "pixelate":
        h, w = x.shape[2:]
        small = nn.functional.interpolate(x, size=(max(1, int(h * v)), max(1, int(w * v))), mode="area")
        out = nn.functional.interpolate(small, size=(h, w), mode="nearest")
    else:  # jpeg
        from poisonlab.defend.recompression import Recompress

        out = Recompress("jpeg", int(v), 8)(x.clamp(0, 1))
    return out.clamp(0.0, 1.0)


@torch.no_grad()
def flip_severities(model: nn.Module, x: torch.Tensor, corruptions: tuple[str, ...], seed: int = 0,
                    batch_size: int = 512) -> torch.Tensor:
    """(n, len(corruptions)) float64: per input and corruption, the first severity whose prediction differs from
    the prediction on the input itself (NEVER = 6 when none does)."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        base = model(xb).argmax(dim=1)
        flips = torch.full((len(xb), len(corruptions)), float(NEVER), dtype=torch.float64, device=xb.device)
        for j, name in enumerate(corruptions):
            for level in range(NEVER - 1, 0, -1):  # from the worst down, so the first flip is what remains
                changed = model(corrupt(xb, name, level, seed)).argmax(dim=1) != base
                flips[changed, j] = float(level)
        out.append(flips.cpu())
    return torch.cat(out) if out else torch.empty(0, len(corruptions), dtype=torch.float64, device="cpu")


def consistency_scores(flips: torch.Tensor) -> torch.Tensor:
    """TeCo's score: the (population) standard deviation of each row's flip severities."""
    return flips.std(dim=1, unbiased=False)


@DETECTORS.register("teco", reference="Liu et al., Detecting Backdoors During the Inference Stage Based on "
                                       "Corruption Robustness Consistency, CVPR 2023")
class TeCo:
    """Std over corruption types of the severity at which the prediction flips; above the clean quantile."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, corruptions: list[str] | tuple[str, ...] | None = None, fpr: float = 0.05,
                 calibration: int = 500, batch_size: int = 512, seed: int = 0):
        names = tuple(SEVERITIES) if corruptions is None else tuple(corruptions)
        unknown = [c for c in names if c not in SEVERITIES]
        if unknown or len(names) < 2:
            raise ConfigError(f"corruptions={list(names)!r} is not accepted; accepted: at least two of "
                              f"{', '.join(SEVERITIES)}")
        self.corruptions = names
        self.fpr = check_range("fpr", fpr, 0.0, 1.0, high_open=True)
        self.calibration = int(check_range("calibration", calibration, 2))
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.seed = int(seed)
        self._fitted: tuple | None = None

    def _check(self, x: torch.Tensor) -> None:
        if len(x) and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise DataError(f"TeCo's corruptions need values in [0, 1]; got [{float(x.min()):.3g},"
                            f" {float(x.max()):.3g}]")
        if "jpeg" in self.corruptions and x.shape[1] not in (1, 3):
            raise DataError(f"TeCo's jpeg corruption needs 1- or 3-channel images; got {x.shape[1]} channels"
                            " (accepted: corruptions without jpeg)")

    def fit(self, model: nn.Module, clean) -> dict:
        """{threshold, clean_mean} from the clean inputs' scores, computed once per (model, clean) pair."""
        if self._fitted is not None and self._fitted[0] is model and self._fitted[1] is clean:
            return self._fitted[2]
        pool = images(clean, "TeCo", "the clean held-out set").to(model_device(model))[:self.calibration]
        self._check(pool)
        scores = consistency_scores(flip_severities(model, pool, self.corruptions, self.seed, self.batch_size))
        state = {"threshold": float(torch.quantile(scores, 1.0 - self.fpr)), "clean_mean": float(scores.mean())}
        self._fitted = (model, clean, state)
        return state

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = std of the flip severities; flagged above the clean inputs' (1 - fpr) quantile."""
        require(self, data=data, model=model, clean=clean)
        x = images(data, "TeCo", "the scanned inputs").to(model_device(model))
        self._check(x)
        was_training = model.training
        model.eval()
        try:
            state = self.fit(model, clean)
            flips = flip_severities(model, x, self.corruptions, self.seed, self.batch_size)
        finally:
            model.train(was_training)
        scores = consistency_scores(flips)
        return Detection(scores, scores > state["threshold"],
                         {"threshold": state["threshold"], "clean_mean": state["clean_mean"],
                          "corruptions": list(self.corruptions),
                          "mean_flip_severity": dict(zip(self.corruptions,
                                                         np.round(flips.mean(0).numpy(), 4).tolist()))})
