"""Input re-compression, an inference-stage purification: JPEG re-compression (Dziugaite, Ghahramani & Roy 2016,
"A study of the effect of JPG compression on adversarial images"; Das et al. 2017, "Keeping the Bad Guys Out")
or bit-depth squeezing (Xu, Evans & Qi, "Feature Squeezing", NDSS 2018), applied to every input before the model.

JPEG: each image (1 or 3 channels, values in [0, 1]) is quantised to 8 bits (round(255 x)), saved by PIL as a
JPEG at ``quality`` and decoded back to [0, 1]: high-frequency detail such as a small sharp patch trigger is
smoothed away. Bits: x -> round(x (2^b - 1)) / (2^b - 1), Xu et al.'s squeezer (b = 1 binarises at 0.5).
Default: JPEG quality 75 (PIL's default and the middle of Das et al.'s range), bits 4 when method="bits".
Inputs outside [0, 1] are refused (the quantisation would clip them silently).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from poisonlab.defend.base import Defended, require
from poisonlab.defend.purify import Purified
from poisonlab.defend.registry import DEFENSES
from poisonlab.errors import ConfigError, DataError, check_range

METHODS = ("jpeg", "bits")


def check_unit_images(x: torch.Tensor, method: str) -> None:
    """DataError unless x is a batch of 1- or 3-channel images (n, c, h, w) with values in [0, 1]."""
    if x.dim() != 4 or (method == "jpeg" and x.shape[1] not in (1, 3)):
        raise DataError(f"re-compression ({method}) needs images (n, c, h, w){' with 1 or 3 channels' if method == 'jpeg' else ''};"
                        f" got inputs of shape {tuple(x.shape)}")
    if len(x) and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(f"re-compression needs values in [0, 1]; got [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """One uint8 image (h, w) or (h, w, 3) through PIL's JPEG encoder at quality and back."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("L" if image.ndim == 2 else "RGB"))


class Recompress(nn.Module):
    """x -> its JPEG re-compression at quality, or its bit-depth squeezing to bits bits (no parameters)."""

    def __init__(self, method: str, quality: int, bits: int):
        super().__init__()
        self.method, self.quality, self.bits = method, quality, bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_unit_images(x, self.method)
        if self.method == "bits":
            levels = 2 ** self.bits - 1
            return torch.round(x * levels) / levels
        pixels = torch.round(x.detach().float().cpu() * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = [jpeg_round_trip(img[..., 0] if img.shape[-1] == 1 else img, self.quality) for img in pixels]
        back = torch.from_numpy(np.stack(out)).reshape(pixels.shape).permute(0, 3, 1, 2)
        return (back.float() / 255).to(x.device, x.dtype)


@DEFENSES.register("recompression", reference="JPEG re-compression (Das et al. 2017) and bit-depth squeezing"
                                              " (Xu, Evans & Qi, Feature Squeezing, NDSS 2018) of every input")
class Recompression:
    """Re-compress (JPEG) or bit-squeeze every input before the model sees it."""

    stage = "inference"
    requires = ("model",)

    def __init__(self, *, method: str = "jpeg", quality: int = 75, bits: int = 4):
        if method not in METHODS:
            raise ConfigError(f"method={method!r} is not valid; accepted: {', '.join(METHODS)}")
        self.method = method
        self.quality = int(check_range("quality", quality, 1, 95))
        self.bits = int(check_range("bits", bits, 1, 8))

    def defend(self, *, model=None, **_) -> Defended:
        """Purified(Recompress, model)."""
        require(self, model=model)
        return Defended(Purified(Recompress(self.method, self.quality, self.bits), model),
                        details={"method": self.method, "quality": self.quality, "bits": self.bits})
