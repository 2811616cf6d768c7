"""Cognitive Distillation (Huang, Ma, Erfani & Bailey, "Distilling Cognitive Backdoor Patterns within an Image",
ICLR 2023; reference code github.com/HanxunH/CognitiveDistillation, cognitive_distillation.py).

For an input x the smallest mask m (one channel, h x w, values in (0, 1)) that keeps the model's output is
learned: with m = (tanh(theta) + 1) / 2 (theta starting at 1) and x_cd = x * m + (1 - m) * delta, delta a random
colour (uniform, one value per channel, redrawn at every step),

    min_theta  ||f(x_cd) - f(x)||_1 / K  +  gamma ||m||_1  +  beta TV(m),

TV(m) = (sum of squared vertical and horizontal differences) / (c h w), by Adam (lr 0.1, betas (0.1, 0.1): the
reference's) for ``steps`` steps. A backdoored input's output is held by its small trigger, so its mask (the
"cognitive pattern") is small; the score is -||m||_1 (higher = more suspicious).

Flagging (the reference's CognitiveDistillationAnalysis): with mu, sigma the mean and standard deviation of the
reference norms, an item is flagged when (mu - ||m||_1) / sigma > ``t`` (1). The reference norms are those of the
scanned training data for ``cognitive_distillation`` (inspects data: the paper's poisoned-sample detection) and
those of the clean held-out set for ``cognitive_distillation_input`` (inspects inputs; fitted once per
(model, clean) pair).

Defaults are the reference's for CIFAR-10 (gamma 0.01, beta 1, lr 0.1, p = 1) with 100 steps (the reference's
default). What differs: per-sample losses are summed over a batch (the reference averages them; Adam makes the
two nearly identical), and the gradient is taken with respect to the mask only, so the caller's model collects
no gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab import progress
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.detect.sentinet import images
from poisonlab.device import model_device
from poisonlab.errors import check_range
from poisonlab.rng import generator

REFERENCE = ("Huang, Ma, Erfani & Bailey, Distilling Cognitive Backdoor Patterns within an Image, ICLR 2023")


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Per-sample TV of masks m (n, c, h, w): (sum of squared vertical and horizontal differences) / (c h w)."""
    tv_h = (m[:, :, 1:, :] - m[:, :, :-1, :]).pow(2).sum(dim=(1, 2, 3))
    tv_w = (m[:, :, :, 1:] - m[:, :, :, :-1]).pow(2).sum(dim=(1, 2, 3))
    return (tv_h + tv_w) / m[0].numel()


def objective(model: nn.Module, x: torch.Tensor, target: torch.Tensor, theta: torch.Tensor, delta: torch.Tensor,
              gamma: float, beta: float) -> torch.Tensor:
    """Per-sample CD loss: mean |f(x m + (1 - m) delta) - target| + gamma ||m||_1 + beta TV(m),
    m = (tanh theta + 1) / 2."""
    m = (torch.tanh(theta) + 1) / 2
    out = model(x * m + (1 - m) * delta)
    return (out - target).abs().mean(dim=1) + gamma * m.abs().sum(dim=(1, 2, 3)) + beta * total_variation(m)


class _Distiller:
    """The shared part of the two detectors: parameters and the mask optimisation."""

    def __init__(self, *, steps: int = 100, lr: float = 0.1, gamma: float = 0.01, beta: float = 1.0, t: float = 1.0,
                 batch_size: int = 256, seed: int = 0):
        self.steps = int(check_range("steps", steps, 1))
        self.lr = check_range("lr", lr, 0.0, low_open=True)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.beta = check_range("beta", beta, 0.0)
        self.t = check_range("t", t, 0.0)
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.seed = int(seed)

    def mask_norms(self, model: nn.Module, x: torch.Tensor, purpose: str) -> torch.Tensor:
        """||m||_1 of the distilled mask of every input of x (CPU float64); model in eval mode meanwhile."""
        was_training = model.training
        model.eval()
        norms = []
        try:
            for i in range(0, len(x), self.batch_size):
                progress.step(f"cognitive distillation: {i}/{len(x)} {purpose}")
                norms.append(self._distill(model, x[i:i + self.batch_size], generator(self.seed, "cd", purpose, i)))
        finally:
            model.train(was_training)
        return torch.cat(norms) if norms else torch.empty(0, dtype=torch.float64, device="cpu")

    def _distill(self, model: nn.Module, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            target = model(x)
        b, c, h, w = x.shape
        theta = torch.ones(b, 1, h, w, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=self.lr, betas=(0.1, 0.1))
        for _ in range(self.steps):
            delta = torch.rand(b, c, 1, 1, generator=g, device="cpu").to(x.device)
            loss = objective(model, x, target, theta, delta, self.gamma, self.beta).sum()
            theta.grad, = torch.autograd.grad(loss, theta)  # the mask's gradient only: the model collects none
            opt.step()
        m = (torch.tanh(theta.detach()) + 1) / 2
        return m.sum(dim=(1, 2, 3)).double().cpu()

    def flags(self, norms: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(flagged, details): (mu - norm) / sigma > t with mu, sigma of the reference norms."""
        mu, sigma = float(reference.mean()), max(float(reference.std()), 1e-12)
        return (mu - norms) / sigma > self.t, {"mask_l1": norms.tolist(), "mean": mu, "std": sigma, "t": self.t}


@DETECTORS.register("cognitive_distillation", reference=REFERENCE + " (poisoned training samples)")
class CognitiveDistillation(_Distiller):
    """Training samples whose distilled mask's L1 norm is more than t standard deviations below the data's mean."""

    inspects = "data"
    requires = ("data", "model")

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = -||m||_1 of each training sample; flagged below mean - t std of the scanned data's norms."""
        require(self, data=data, model=model)
        norms = self.mask_norms(model, images(data, "Cognitive Distillation", "the data").to(model_device(model)),
                                "data")
        flagged, details = self.flags(norms, norms)
        return Detection(-norms, flagged, details)


@DETECTORS.register("cognitive_distillation_input", reference=REFERENCE + " (inputs at inference)")
class CognitiveDistillationInput(_Distiller):
    """Inputs whose distilled mask's L1 norm is more than t standard deviations below the clean inputs' mean."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, steps: int = 100, lr: float = 0.1, gamma: float = 0.01, beta: float = 1.0, t: float = 1.0,
                 calibration: int = 500, batch_size: int = 256, seed: int = 0):
        super().__init__(steps=steps, lr=lr, gamma=gamma, beta=beta, t=t, batch_size=batch_size, seed=seed)
        self.calibration = int(check_range("calibration", calibration, 2))
        self._fitted: tuple | None = None

    def fit(self, model: nn.Module, clean) -> torch.Tensor:
        """The clean inputs' mask norms, computed once per (model, clean) pair."""
        if self._fitted is None or self._fitted[0] is not model or self._fitted[1] is not clean:
            pool = images(clean, "Cognitive Distillation", "the clean held-out set").to(model_device(model))
            self._fitted = (model, clean, self.mask_norms(model, pool[:self.calibration], "clean"))
        return self._fitted[2]

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = -||m||_1 of each input; flagged below mean - t std of the clean inputs' norms."""
        require(self, data=data, model=model, clean=clean)
        x = images(data, "Cognitive Distillation", "the scanned inputs").to(model_device(model))
        reference = self.fit(model, clean)
        norms = self.mask_norms(model, x, "scan")
        flagged, details = self.flags(norms, reference)
        return Detection(-norms, flagged, details)
