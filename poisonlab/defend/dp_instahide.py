"""DP-InstaHide (Borgnia, Geiping, Cherepanova, Fowl, Gupta, Ghiasi, Huang, Goldblum & Goldstein,
"DP-InstaHide: Provably Defusing Poisoning and Backdoor Attacks with Differentially Private Data
Augmentations", 2021) as a training-stage defense.

Every mini-batch is replaced by a k-way mixup of itself plus Laplacian noise: weights lambda ~ Dirichlet(1,
..., 1) (k of them, one draw per batch), partners by k - 1 random permutations of the batch,

    x~ = sum_j lambda_j x[perm_j] + Laplace(0, scale) per coordinate (clipped to [0, 1] for images),
    loss = sum_j lambda_j CE(f(x~), y[perm_j])   (the cross-entropy of the mixed soft label).

Mixing dilutes a trigger and the label it carries; the noise makes the augmentation differentially private
(the paper's Thm.: k-way mixup strengthens the Laplace mechanism's guarantee at least k-fold), which bounds
what a few poisoned rows can do. The batch mixing and the noise follow ART's DPInstaHideTrainer with its
Mixup preprocessor (art.defences.trainer), contributed with the paper.

Defaults: k = 4 and Laplacian scale 0.1 for inputs in [0, 1]; the paper sweeps the mixup width (k = 2, 4)
and the noise scale rather than fixing one, so these are a mid-range choice, not a value read from it.
train_cfg's epochs, batch size, optimizer and lr. Every draw comes from generator(seed, ...) on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import Defended, require
from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.training_loop import epochs, fresh_model, on_device, optimizer
from poisonlab.device import model_device
from poisonlab.errors import check_range
from poisonlab.rng import generator


def mix(x: torch.Tensor, weights: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """sum_j weights[j] * x[partners[j]]: the k-way mixup of a batch (partners: (k, n) row indices)."""
    return torch.einsum("k,kn...->n...", weights.to(x.dtype), x[partners])


def mixed_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """sum_j weights[j] * CE(logits, y[partners[j]]): the cross-entropy of the mixed soft labels."""
    return sum(w * F.cross_entropy(logits, y[p]) for w, p in zip(weights.tolist(), partners))


def laplace(shape: tuple[int, ...], scale: float, g: torch.Generator) -> torch.Tensor:
    """Laplace(0, scale) noise of shape, on the CPU from g (inverse CDF of a uniform draw)."""
    u = torch.rand(shape, generator=g, device="cpu").clamp(1e-7, 1 - 1e-7) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2 * u.abs())


@DEFENSES.register("dp_instahide", reference="Borgnia et al., DP-InstaHide: Provably Defusing Poisoning and Backdoor"
                                             " Attacks with Differentially Private Data Augmentations, 2021")
class DPInstaHide:
    """Train a fresh model on k-way mixup plus Laplacian noise of every batch."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, k: int = 4, scale: float = 0.1):
        self.k = int(check_range("k", k, 1, 64))
        self.scale = check_range("scale", scale, 0.0, None)

    def defend(self, *, data=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """A fresh model trained with DP-InstaHide on data."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        model = fresh_model(build, "dp_instahide")
        self.train(model, data, train_cfg, seed)
        return Defended(model, details={"k": self.k, "scale": self.scale})

    def augment(self, x: torch.Tensor, g: torch.Generator, clamp: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
        """(mixed and noised batch, the k weights, the (k, n) partners): row 0 of partners is the batch itself."""
        n = len(x)
        spacing = -torch.log(torch.rand(self.k, generator=g, device="cpu").clamp_min(1e-12))
        weights = spacing / spacing.sum()  # Dirichlet(1, ..., 1): normalised standard exponentials
        partners = torch.stack([torch.arange(n, device="cpu")] + [torch.randperm(n, generator=g, device="cpu")
                                                    for _ in range(self.k - 1)]).to(x.device)
        out = mix(x, weights.to(x.device), partners)
        if self.scale > 0:
            out = out + laplace(tuple(x.shape), self.scale, g).to(x.device)
        return (out.clamp(0, 1) if clamp else out), weights, partners

    def train(self, model: nn.Module, data: Dataset, cfg, seed: int) -> None:
        """train_cfg.epochs epochs of DP-InstaHide training of model, in place."""
        device = model_device(model)
        x, y = on_device(data, device)
        opt = optimizer(model, cfg)
        g = generator(seed, "dp-instahide")
        model.train()
        for _, idx in epochs(opt, cfg, len(data), cfg.epochs, seed, "dp-instahide", device=device,
                             what="DP-InstaHide epoch"):
            xb, weights, partners = self.augment(x[idx], g, data.is_image)
            opt.zero_grad(set_to_none=True)
            mixed_loss(model(xb), y[idx], weights, partners).backward()
            opt.step()
        model.eval()
