"""SSBA: sample-specific invisible triggers hidden by a steganographic encoder (Li et al. 2021, ICCV).

Li, Li, Wu, Li, He and Lyu, "Invisible backdoor attack with sample-specific triggers". An encoder
trained to hide a bit string in an image (StegaStamp, Tancik et al. 2020, in the paper) embeds one fixed
string, the attacker's secret, in every poisoned image: the residual r = E(x, s) differs from image to image
(sample-specific) and is invisible, and the decoder D recovers s from x + r. The poison is then dirty-label:
rate of the training set (the paper's 10%) replaced by the encoded images and relabelled to the target.

Here, trained in-package on the data being poisoned:
  - encoder: the secret s (``bits`` values in {0, 1}) through a linear layer to one h x w plane, concatenated
    with x, then a conv stack; the residual r = eps tanh(.), so ||r||_inf <= eps; encoded = clip(x + r, 0, 1);
  - decoder: StegaStamp's decoder shape, smaller: a 3x3 convolution, two stride-2 convolutions, 4 x 4 average
    pooling, a dense layer of 128, a linear layer to ``bits`` logits (the first decoder, a conv stack, 4 x 4
    pooling and one linear layer, read back too few bits on MNIST);
  - warm-up: the bound starts at ``eps_start`` (0.3) and decays linearly to eps over the first ``warmup`` (40%)
    of the steps, so the decoder first learns from a strong residual (StegaStamp likewise ramps its image
    losses up from 0); 12 epochs at lr 0.001 read back 99% of 32 bits on the MNIST split at eps 0.05
    (benchmarks/ssba_bits.py), where 12 epochs at lr 0.003 collapsed to a constant output;
  - loss: BCE(D(encoded), s) + lambda_residual mean(r^2), each image with a fresh random secret (so the
    decoder reads the bits, it does not memorise one string), Adam, ``epochs`` passes. lambda_residual
    defaults to 0, so the L-inf bound eps alone keeps the residual small: with Adam even lambda 1 shrank the
    residual to ~2e-4 before the decoder learned anything (MNIST, 32 bits, eps 0.05: bits not recovered).
How this differs from StegaStamp, stated: a few-layer network instead of a U-Net encoder and a deep decoder;
trained on the poisoned dataset itself (the paper uses a StegaStamp trained on ImageNet / the victim's data);
invisibility from an L-inf bound (plus an optional L2 penalty) instead of StegaStamp's LPIPS perceptual loss, critic
(GAN) loss and the image corruptions it is trained against; ``bits`` 32 by default (StegaStamp hides 100
bits; SSBA encodes the target's name). The secret is drawn from the seed (or given as a string of 0/1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.generated import GeneratedBackdoor, LearnedTrigger
from poisonlab.poison.generator_nets import conv_stack, freeze, minibatches, run_frozen, seeded
from poisonlab.poison.registry import POISONS
from poisonlab.rng import generator


class Encoder(nn.Module):
    """(x, s) -> residual r = eps tanh(conv(x ++ plane(s))), ||r||_inf <= eps."""

    def __init__(self, channels: int, h: int, w: int, bits: int, width: int, eps: float) -> None:
        super().__init__()
        self.plane = nn.Linear(bits, h * w)
        self.body = conv_stack(channels + 1, channels, width, depth=4)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, secret: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """The residual for images x and secrets (n, bits); eps overrides the bound (the training warm-up)."""
        plane = self.plane(secret * 2 - 1).reshape(len(x), 1, *x.shape[-2:])
        return (self.eps if eps is None else float(eps)) * torch.tanh(self.body(torch.cat([x, plane], dim=1)))


class Decoder(nn.Module):
    """image -> bits logits: StegaStamp's decoder shape, smaller: a 3x3 convolution, two stride-2 convolutions
    (width, 2 width, 2 width channels), 4 x 4 average pooling, a hidden dense layer of 128, a linear layer to bits."""

    def __init__(self, channels: int, bits: int, width: int) -> None:
        super().__init__()
        w = int(width)
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(2 * w * 16, 128), nn.ReLU(), nn.Linear(128, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def warmup_bound(step: int, steps: int, eps: float, eps_start: float, warmup: float) -> float:
    """The residual's L-inf bound at a training step: eps_start at step 0, decaying linearly to eps at
    warmup * steps, eps from then on (warmup 0: eps throughout)."""
    ramp = float(warmup) * int(steps)
    if ramp <= 0 or step >= ramp:
        return float(eps)
    return float(eps) + (float(eps_start) - float(eps)) * (1.0 - step / ramp)


def encode(encoder: nn.Module, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
    """clip(x + E(x, s), 0, 1) for x (n, c, h, w) and secret (bits,) or (n, bits)."""
    s = secret.to(x.dtype).expand(len(x), -1) if secret.dim() == 1 else secret.to(x.dtype)
    return (x + encoder(x, s)).clamp(0.0, 1.0)


class SecretTrigger(LearnedTrigger):
    """The trained encoder with the fixed secret; ``decode(x)`` reads bits back with the trained decoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, secret: torch.Tensor, info: dict) -> None:
        self.encoder, self.decoder, self.secret = freeze(encoder), freeze(decoder), secret
        super().__init__("ssba", lambda x: encode(self.encoder, x, self.secret), info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The bits (n, bits) int64 the decoder reads from images x."""
        return (run_frozen(self.decoder, x) > 0).long()


def parse_secret(secret: str | None, bits: int, seed: int) -> torch.Tensor:
    """The secret as float {0, 1} (bits,): the given 0/1 string, or drawn from (seed, "ssba", "secret")."""
    if secret is None:
        return torch.randint(0, 2, (int(bits),), generator=generator(seed, "ssba", "secret")).float()
    text = str(secret)
    if len(text) != int(bits) or set(text) - {"0", "1"}:
        raise ConfigError(f"secret={secret!r} is not valid; accepted: a string of {bits} characters 0/1 (or none)")
    return torch.tensor([float(ch) for ch in text])


@POISONS.register("ssba", reference="Li et al. 2021, Invisible backdoor attack with sample-specific triggers "
                                    "(ICCV): a small in-package encoder/decoder instead of StegaStamp")
@dataclass(frozen=True)
class Ssba(GeneratedBackdoor):
    """Images carrying a fixed secret hidden by a trained encoder (residual within eps), relabelled to the target."""

    bits: int = 32
    eps: float = 0.05
    lambda_residual: float = 0.0
    eps_start: float = 0.3
    warmup: float = 0.4
    secret: str | None = None
    width: int = 16
    lr: float = 0.001
    epochs: int = 12
    name = "ssba"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("eps", float(self.eps), 0.0, 1.0)
        check_range("warmup", float(self.warmup), 0.0, 1.0)
        if not float(self.eps) <= float(self.eps_start) <= 1.0:
            raise ConfigError(f"eps_start={self.eps_start} is out of range; accepted: [eps, 1] = [{self.eps}, 1]")
        for what in ("bits", "width"):
            if int(getattr(self, what)) < 1:
                raise ConfigError(f"{what}={getattr(self, what)} is out of range; accepted: an int >= 1")
        if float(self.lambda_residual) < 0:
            raise ConfigError(f"lambda_residual={self.lambda_residual} is out of range; accepted: >= 0")
        parse_secret(self.secret, int(self.bits), 0)

    def learn(self, data: Dataset, seed: int) -> SecretTrigger:
        """Train encoder and decoder on data with a fresh random secret per image; embed the fixed secret."""
        x = data.x.to(torch.float32)
        c, h, w = x.shape[1:]
        k = int(self.bits)
        enc = seeded(lambda: Encoder(c, h, w, k, int(self.width), float(self.eps)), seed, "ssba", "encoder")
        dec = seeded(lambda: Decoder(c, k, int(self.width)), seed, "ssba", "decoder")
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=float(self.lr))
        draws = generator(seed, "ssba", "training-secrets")
        steps = -(-len(x) // int(self.batch)) * int(self.epochs)
        plan = minibatches(len(x), int(self.batch), int(self.epochs), generator(seed, "ssba", "plan"))
        for step, rows in enumerate(plan):
            s = torch.randint(0, 2, (len(rows), k), generator=draws).float()
            bound = warmup_bound(step, steps, float(self.eps), float(self.eps_start), float(self.warmup))
            residual = enc(x[rows], s, bound)
            logits = dec((x[rows] + residual).clamp(0.0, 1.0))
            loss = F.binary_cross_entropy_with_logits(logits, s) + float(self.lambda_residual) * residual.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        secret = parse_secret(self.secret, k, seed)
        info = {"bits": k, "eps": float(self.eps), "secret": "".join(str(int(b)) for b in secret.tolist())}
        return SecretTrigger(enc, dec, secret, info)
