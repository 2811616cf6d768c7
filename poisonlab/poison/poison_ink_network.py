"""Poison Ink with its injection network: the coloured edge map hidden invisibly in the image (Zhang et al. 2022).

Zhang, Chen, Huang, Liao, Zhang, Feng, Hua and Yu, "Poison Ink: Robust and invisible backdoor attack"
(IEEE TIP 2022). The trigger is the image's own structure: its edge map E, filled with the trigger colour
("poison ink"), T = E * color. An injection network IN embeds T into the cover image x, and an extraction
network (the paper's guidance extractor GE) is trained with it to recover T from the poisoned image:
    x_p = IN(x, T)
    L_IN = lambda_image ||x_p - x||^2 + ||GE(x_p) - T||^2           (invisibility + the trigger kept in x_p)
    L_GE = ||GE(x_p) - T||^2 + lambda_clean ||GE(x) - 0||^2          (a blank image from clean inputs)
trained jointly (one Adam on both networks, the sum of the two losses). The clean term makes GE read
the *injected* signal, not the edges it could compute from any image. The attack then poisons ``rate`` of
the training set with x_p and relabels those rows (dirty label, as BackdoorBench), poison/generated.py.

What is followed and what is not:
  - followed: the coloured edge trigger (the paper's colour (240, 120, 20) by default; on grey images its
    BT.601 luma), the injection network fed (cover, coloured edges) and trained against an extraction
    network with an image loss, the extractor's blank-on-clean term, dirty label at 10%;
  - edges: Sobel (poison/poison_ink.py ``edge_map``, magnitude / 4 >= ``threshold``), not Canny;
  - networks: small size-preserving conv stacks (generator_nets.py), not the paper's U-Net; IN outputs a
    residual bounded by eps (x_p = clip(x + eps tanh(.), 0, 1)), so ||x_p - x||_inf <= eps always holds;
  - left out: the PatchGAN discriminator (adversarial loss), the interference layer (the augmentations IN
    is trained to survive), SSIM; and the paper's second stage (a GE-guided victim training): here the victim is
    trained on the data poison only.
The visible variant (edges blended directly) stays available as the ``poison_ink`` trigger of ``backdoor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.generated import GeneratedBackdoor, LearnedTrigger
from poisonlab.poison.generator_nets import conv_stack, freeze, minibatches, run_frozen, seeded
from poisonlab.poison.poison_ink import check_edge_colour, edge_map
from poisonlab.poison.registry import POISONS
from poisonlab.poison.triggers import channel_values
from poisonlab.rng import generator

PAPER_COLOR = (240 / 255, 120 / 255, 20 / 255)


def ink(x: torch.Tensor, color: float | Sequence[float], threshold: float) -> torch.Tensor:
    """The coloured edge image T = E(x) * color (n, c, h, w): the trigger colour on edge pixels, 0 elsewhere."""
    values = channel_values(color, x.shape[1]).to(x.dtype).reshape(1, -1, 1, 1)
    return edge_map(x, threshold) * values


class Injector(nn.Module):
    """(x, T) -> x_p = clip(x + eps tanh(conv(x ++ T)), 0, 1): the poisoned image, within eps of x."""

    def __init__(self, channels: int, width: int, eps: float) -> None:
        super().__init__()
        self.body = conv_stack(2 * channels, channels, width, depth=4)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, trigger: torch.Tensor) -> torch.Tensor:
        return (x + self.eps * torch.tanh(self.body(torch.cat([x, trigger], dim=1)))).clamp(0.0, 1.0)


def extractor(channels: int, width: int) -> nn.Module:
    """image -> its coloured edge trigger estimate (a conv stack, linear output: a sigmoid saturated at the blank
    output and stopped learning)."""
    return conv_stack(channels, channels, width, depth=4)


class InkTrigger(LearnedTrigger):
    """The trained injector applied to each image's own coloured edges; ``extract(x)`` runs the trained extractor."""

    def __init__(self, injector: Injector, extraction: nn.Module, color, threshold: float, info: dict) -> None:
        self.injector, self.extraction = freeze(injector), freeze(extraction)
        self.color, self.threshold = color, float(threshold)
        super().__init__("poison_ink", lambda x: self.injector(x, ink(x, self.color, self.threshold)), info)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """The extractor's trigger estimate (n, c, h, w) for images x."""
        return run_frozen(self.extraction, x)


def losses(injector: nn.Module, extraction: nn.Module, x: torch.Tensor, trigger: torch.Tensor) -> dict:
    """The three mean-squared terms on one batch: image (x_p vs x), trigger (GE(x_p) vs T), clean (GE(x) vs 0)."""
    poisoned = injector(x, trigger)
    return {"image": F.mse_loss(poisoned, x), "trigger": F.mse_loss(extraction(poisoned), trigger),
            "clean": extraction(x).pow(2).mean()}


@POISONS.register("poison_ink", reference="Zhang et al. 2022, Poison Ink: Robust and invisible backdoor attack "
                                          "(IEEE TIP): coloured Sobel edges hidden by a trained injection network")
@dataclass(frozen=True)
class PoisonInk(GeneratedBackdoor):
    """The coloured edge map embedded by a trained injection network (within eps), rows relabelled to the target."""

    color: float | Sequence[float] = PAPER_COLOR
    threshold: float = 0.25
    eps: float = 0.1
    lambda_image: float = 1.0
    lambda_clean: float = 1.0
    width: int = 16
    lr: float = 0.003
    epochs: int = 3
    name = "poison_ink"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("eps", float(self.eps), 0.0, 1.0)
        check_edge_colour(self)
        for what in ("lambda_image", "lambda_clean"):
            if float(getattr(self, what)) < 0:
                raise ConfigError(f"{what}={getattr(self, what)} is out of range; accepted: >= 0")
        if int(self.width) < 1:
            raise ConfigError(f"width={self.width} is out of range; accepted: an int >= 1")

    def _check(self, data: Dataset) -> None:
        super()._check(data)
        if data.x.shape[-1] < 2 or data.x.shape[-2] < 2:
            raise ConfigError(f"poison_ink needs images of at least 2x2; got {tuple(data.x.shape[-2:])}")
        channel_values(self.color, data.x.shape[1])  # a colour that does not fit the channels is refused here

    def learn(self, data: Dataset, seed: int) -> InkTrigger:
        """Train the injector and the extractor jointly on data (seeded); the trained pair is the trigger."""
        x = data.x.to(torch.float32)
        c = x.shape[1]
        inj = seeded(lambda: Injector(c, int(self.width), float(self.eps)), seed, "poison-ink", "injector")
        ext = seeded(lambda: extractor(c, int(self.width)), seed, "poison-ink", "extractor")
        opt = torch.optim.Adam([*inj.parameters(), *ext.parameters()], lr=float(self.lr))
        for rows in minibatches(len(x), int(self.batch), int(self.epochs), generator(seed, "poison-ink", "plan")):
            xb = x[rows]
            terms = losses(inj, ext, xb, ink(xb, self.color, float(self.threshold)))
            loss = float(self.lambda_image) * terms["image"] + terms["trigger"] + float(self.lambda_clean) * terms["clean"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        info = {"eps": float(self.eps), "lambda_image": float(self.lambda_image), "epochs": int(self.epochs),
                "threshold": float(self.threshold)}
        return InkTrigger(inj, ext, self.color, float(self.threshold), info)
