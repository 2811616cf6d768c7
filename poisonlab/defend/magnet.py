"""MagNet (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples", CCS 2017), as a registered
inference-stage defense: an autoencoder trained on clean data is both a detector and a reformer.

- The autoencoder (MagNet's MNIST architecture, Table 1: conv3x3(3) sigmoid, avg-pool 2, conv3x3(3) sigmoid |
  conv3x3(3) sigmoid, up-sample 2, conv3x3(3) sigmoid, conv3x3(c) sigmoid; for feature vectors: linear to half the
  width, sigmoid, linear back) is trained to reconstruct the defender's clean inputs from copies with Gaussian
  noise of std ``noise`` (MagNet's "noise volume" 0.1), mean-squared error, Adam.
- Detector: an input's reconstruction error mean |x - AE(x)|^p (p = ``norm``, 1 or 2); an input whose error
  exceeds the threshold is rejected (Defended.reject). The threshold is the (1 - fpr) quantile of the errors of a
  held-out share ``val_share`` of the clean set (MagNet sets it on validation data at a chosen false-positive rate).
- Reformer: the deployed model is Purified(AE, model): every input is replaced by its reconstruction, which
  pulls it back towards the clean data's manifold (a trigger that is off that manifold is smoothed away).

Defaults scaled to a CPU and a clean set of a few hundred rows: 50 epochs of batches of 16 at Adam lr 1e-2
(MagNet: 100 epochs over 55,000 images at lr 1e-3; with few rows the autoencoder needs the larger steps), fpr 0.01 (MagNet: 0.001 to 0.005 on a
large validation set; a few hundred held-out rows cannot resolve those), val_share 0.2. The autoencoder's output
sigmoid assumes inputs in [0, 1] (MagNet's); other ranges are refused.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import Defended, require
from poisonlab.defend.purify import Purified
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.models import init_parameters
from poisonlab.rng import construction_stream, generator


class Autoencoder(nn.Module):
    """MagNet's MNIST autoencoder for (c, h, w) images; a one-hidden-layer sigmoid autoencoder for vectors."""

    def __init__(self, input_shape: tuple[int, ...], filters: int = 3):
        super().__init__()
        if len(input_shape) == 3:
            c, h, w = input_shape
            self.encoder = nn.Sequential(nn.Conv2d(c, filters, 3, padding=1), nn.Sigmoid(), nn.AvgPool2d(2),
                                         nn.Conv2d(filters, filters, 3, padding=1), nn.Sigmoid())
            self.decoder = nn.Sequential(nn.Conv2d(filters, filters, 3, padding=1), nn.Sigmoid(),
                                         nn.Upsample(size=(h, w)), nn.Conv2d(filters, filters, 3, padding=1),
                                         nn.Sigmoid(), nn.Conv2d(filters, c, 3, padding=1), nn.Sigmoid())
        elif len(input_shape) == 1:
            f = input_shape[0]
            self.encoder = nn.Sequential(nn.Linear(f, max(1, f // 2)), nn.Sigmoid())
            self.decoder = nn.Sequential(nn.Linear(max(1, f // 2), f), nn.Sigmoid())
        else:
            raise ConfigError(f"MagNet needs images (c, h, w) or feature vectors (f,); got input_shape={input_shape}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def reconstruction_error(ae: nn.Module, x: torch.Tensor, norm: int, batch_size: int = 512) -> torch.Tensor:
    """Per-input mean |x - ae(x)|^norm (on the CPU)."""
    device = model_device(ae)
    with torch.no_grad():
        parts = [(xb.to(device) - ae(xb.to(device))).abs().pow(norm).flatten(1).mean(dim=1).cpu()
                 for xb in x.split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, device="cpu")


def train_autoencoder(data: Dataset, epochs: int, lr: float, batch_size: int, noise: float, seed: int,
                      device: torch.device) -> Autoencoder:
    """An Autoencoder for data's inputs, seeded, trained to reconstruct x from x + N(0, noise^2) (MSE, Adam)."""
    with construction_stream(seed, "magnet", "defaults"), torch.device("cpu"):
        ae = Autoencoder(tuple(data.input_shape))
    init_parameters(ae, generator(seed, "magnet", "init"))
    ae = ae.to(device).train()
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    x = data.x.to(device)
    for epoch in range(epochs):
        g = generator(seed, "magnet", "epoch", epoch)
        order = torch.randperm(len(x), generator=g, device="cpu").to(device)
        for start in range(0, len(x), batch_size):
            xb = x[order[start:start + batch_size]]
            noisy = xb + noise * torch.randn(xb.shape, generator=g, device="cpu").to(device, xb.dtype)
            loss = nn.functional.mse_loss(ae(noisy.clamp(0, 1)), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        progress.step(f"autoencoder epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.5f}")
    return ae.eval().requires_grad_(False)


@DEFENSES.register("magnet", reference="Meng & Chen, MagNet: a Two-Pronged Defense against Adversarial Examples,"
                                       " CCS 2017")
class MagNet:
    """Reform every input through a clean-data autoencoder; reject inputs it reconstructs badly."""

    stage = "inference"
    requires = ("model", "clean")

    def __init__(self, *, fpr: float = 0.01, norm: int = 2, epochs: int = 50, lr: float = 1e-2, batch_size: int = 16,
                 noise: float = 0.1, val_share: float = 0.2, detect: bool = True, reform: bool = True):
        self.fpr = check_range("fpr", fpr, 0.0, 1.0)
        if norm not in (1, 2):
            raise ConfigError(f"norm={norm!r} is not valid; accepted: 1, 2")
        self.norm = norm
        self.epochs = int(check_range("epochs", epochs, 1, 10000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.noise = check_range("noise", noise, 0.0, None)
        self.val_share = check_range("val_share", val_share, 0.0, 1.0, low_open=True, high_open=True)
        if not (detect or reform):
            raise ConfigError("detect=False and reform=False leave nothing to do; accepted: at least one of them True")
        self.detect, self.reform = bool(detect), bool(reform)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """Purified(AE, model) (or a copy of model when reform=False) with the detector as reject."""
        require(self, model=model, clean=clean)
        if float(clean.x.min()) < 0.0 or float(clean.x.max()) > 1.0:
            raise DataError("MagNet's autoencoder needs inputs in [0, 1]; got values in"
                            f" [{float(clean.x.min()):.3g}, {float(clean.x.max()):.3g}]")
        order = torch.randperm(len(clean), generator=generator(seed, "magnet", "split"), device="cpu")
        n_val = max(1, int(round(self.val_share * len(clean))))
        if len(clean) - n_val < 1:
            raise ConfigError(f"the clean set has {len(clean)} rows; MagNet needs at least 2 (training and validation)")
        fit, val = clean.subset(order[n_val:].to(clean.y.device)), clean.subset(order[:n_val].to(clean.y.device))
        with progress.phase("MagNet"):
            ae = train_autoencoder(fit, self.epochs, self.lr, self.batch_size, self.noise, seed, model_device(model))
        threshold = float(torch.quantile(reconstruction_error(ae, val.x, self.norm), 1.0 - self.fpr))
        deployed = Purified(ae, model) if self.reform else Purified(nn.Identity(), model)
        reject = (lambda x: reconstruction_error(ae, x, self.norm) > threshold) if self.detect else None
        return Defended(deployed.eval(), reject=reject, details={"threshold": threshold, "validation_rows": n_val})
