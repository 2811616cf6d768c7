"""PGD adversarial training (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant
to Adversarial Attacks", ICLR 2018) as a training-stage defense against poisons that hide in small
perturbations.

Every mini-batch is replaced by its projected-gradient-descent adversarial examples before the step
(Madry's min-max objective): from a uniform random start in the L-infinity ball of radius epsilon around x,
``steps`` times x' <- clip_{[x - eps, x + eps]}(x' + alpha * sign(grad_x' CE(f(x'), y))), kept in [0, 1]
for images. A model that is constant on every training point's epsilon-ball cannot be switched by a trigger
of L-infinity size below epsilon, and the perturbation-based poisons (error-minimising "unlearnable"
noise, gradient-matching and feature-collision poisons) lose their effect (Tao et al., "Better Safe Than
Sorry: Preventing Delusive Adversaries with Adversarial Training", NeurIPS 2021; Geiping et al., "What
Doesn't Kill You Makes You Robust(er)", 2021). It does NOT help against visible patch triggers far larger
than epsilon (Weng, Lee & Wu, "On the Trade-off between Adversarial and Backdoor Robustness", NeurIPS 2020).

Defaults: Madry's CIFAR-10 setting, epsilon 8/255, alpha 2/255, 7 steps (MNIST: 0.3, 0.01, 40); train_cfg's
epochs, batch size, optimizer and lr. The examples are crafted with the model in eval mode (batch-norm
statistics frozen while attacking, as in common implementations), then the step is taken in train mode.
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


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, alpha: float, steps: int,
        g: torch.Generator | None = None, clamp: bool = True) -> torch.Tensor:
    """L-infinity PGD examples of x (Madry et al. 2018): a uniform start in the epsilon-ball (drawn from g on
    the CPU; no random start when g is None), then steps of alpha * sign(gradient of the cross-entropy),
    projected back on the ball and, with clamp, on [0, 1]. The model's parameters get no gradient."""
    was_training = model.training
    model.eval()
    grads_on = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        adv = x.detach().clone()
        if g is not None:
            adv = adv + (torch.rand(tuple(x.shape), generator=g, device="cpu").to(x.device) * 2 - 1) * epsilon
        adv = adv.clamp(0, 1) if clamp else adv
        for _ in range(steps):
            adv.requires_grad_(True)
            (gx,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
            adv = adv.detach() + alpha * gx.sign()
            adv = torch.min(torch.max(adv, x - epsilon), x + epsilon)
            adv = adv.clamp(0, 1) if clamp else adv
        return adv.detach()
    finally:
        for p, on in zip(model.parameters(), grads_on):
            p.requires_grad_(on)
        model.train(was_training)


@DEFENSES.register("pgd_at", reference="Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks,"
                                       " ICLR 2018")
class PGDAdversarialTraining:
    """Train a fresh model on the PGD adversarial examples of each batch."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, epsilon: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7, random_start: bool = True):
        self.epsilon = check_range("epsilon", epsilon, 0.0, None, low_open=True)
        self.alpha = check_range("alpha", alpha, 0.0, None, low_open=True)
        self.steps = int(check_range("steps", steps, 1, 1000))
        self.random_start = bool(random_start)

    def defend(self, *, data=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """A fresh model adversarially trained on data; details: the attack's settings."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        model = fresh_model(build, "pgd_at")
        self.train(model, data, train_cfg, seed)
        return Defended(model, details={"epsilon": self.epsilon, "alpha": self.alpha, "steps": self.steps})

    def train(self, model: nn.Module, data: Dataset, cfg, seed: int) -> None:
        """train_cfg.epochs epochs of adversarial training of model, in place."""
        device = model_device(model)
        x, y = on_device(data, device)
        opt = optimizer(model, cfg)
        start = generator(seed, "pgd-at-start") if self.random_start else None
        for _, idx in epochs(opt, cfg, len(data), cfg.epochs, seed, "pgd-at", device=device, what="PGD-AT epoch"):
            adv = pgd(model, x[idx], y[idx], self.epsilon, self.alpha, self.steps, start, clamp=data.is_image)
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(adv), y[idx]).backward()
            opt.step()
        model.eval()
