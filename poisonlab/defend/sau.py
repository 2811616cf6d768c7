"""SAU, shared adversarial unlearning (Wei, Zhang, Zha & Wu, "Shared Adversarial Unlearning: Backdoor Mitigation
by Unlearning Shared Adversarial Examples", NeurIPS 2023), as a registered repair defense.

The paper bounds the backdoor risk of the model being purified (theta, initialised as the backdoored model
theta_bd, which stays fixed as a reference) by its risk on *shared* adversarial examples: perturbed clean inputs
that BOTH models send to the same wrong class. Each batch of the defender's clean set:

1. inner step: delta (L-inf radius ``eps``, ``steps`` signed-gradient ascent steps of eps / 4) maximises the
   relaxed shared-adversarial loss
       l_share(x~) = -log(1 - max_{k != y} min(p_k(x~; theta), p_k(x~; theta_bd)))
   (large when some wrong class is likely under both models);
2. outer step: theta minimises  CE(f_theta(x), y) + w_share * l_share(x + delta) + w_adv * CE(f_theta(x + delta), y),
   unlearning the shared examples (theta_bd enters l_share as a constant) while keeping the clean accuracy.

Simplifications (CPU scale, docs/backdoor-defenses.md): the inner step ascends l_share alone, from zero, with no
random start; w_share = 1 and w_adv = 0 (BackdoorBench's default weights keep the vanilla adversarial term off as
we understand them); SGD lr 0.01, momentum 0.9, 20 epochs (the paper: 100 epochs on 5% of the training data).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab import progress
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import check_range
from poisonlab.rng import generator


def shared_loss(logits: torch.Tensor, reference_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(1 - max_{k != y} min(p_k, q_k)), p = softmax(logits), q = softmax(reference_logits)."""
    both = torch.minimum(logits.softmax(dim=1), reference_logits.softmax(dim=1))
    wrong = both.scatter(1, y[:, None], 0.0).amax(dim=1)
    return -torch.log((1 - wrong).clamp_min(1e-12)).mean()


def shared_pgd(model: nn.Module, reference: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
               low: float, high: float) -> torch.Tensor:
    """delta with |delta|_inf <= eps (x + delta kept in [low, high]) ascending shared_loss of the two models."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = shared_loss(model(x + delta), reference(x + delta), y)
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += eps / 4 * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(low, high) - x)
    return delta.detach()


@DEFENSES.register("sau", reference="Wei, Zhang, Zha & Wu, Shared Adversarial Unlearning: Backdoor Mitigation by"
                                    " Unlearning Shared Adversarial Examples (SAU), NeurIPS 2023")
class SAU:
    """Fine-tune on the clean set while unlearning adversarial examples shared with the backdoored model."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, eps: float = 0.2, steps: int = 5, epochs: int = 20, lr: float = 0.01, batch_size: int = 32,
                 w_share: float = 1.0, w_adv: float = 0.0):
        self.eps = check_range("eps", eps, 0.0, None, low_open=True)
        self.steps = int(check_range("steps", steps, 1, 1000))
        self.epochs = int(check_range("epochs", epochs, 1, 10000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.w_share = check_range("w_share", w_share, 0.0, None)
        self.w_adv = check_range("w_adv", w_adv, 0.0, None)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The purified copy; details: the last epoch's mean shared loss."""
        require(self, model=model, clean=clean)
        reference = copy.deepcopy(model).requires_grad_(False).eval()
        purified = trainable_copy(model)
        opt = torch.optim.SGD(purified.parameters(), lr=self.lr, momentum=0.9)
        device = model_device(model)
        x, y = clean.x.to(device), clean.y.to(device)
        low, high = float(clean.x.min()), float(clean.x.max())
        ce = nn.functional.cross_entropy
        shared = 0.0
        with progress.phase("shared adversarial unlearning"):
            for epoch in range(self.epochs):
                order = torch.randperm(len(x), generator=generator(seed, "sau", epoch), device="cpu").to(device)
                total = torch.zeros((), device=device)
                for start in range(0, len(x), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    purified.eval()                      # perturbations against the model as deployed
                    delta = shared_pgd(purified, reference, x[idx], y[idx], self.eps, self.steps, low, high)
                    purified.train()
                    adv = x[idx] + delta
                    adv_logits = purified(adv)
                    share = shared_loss(adv_logits, reference(adv), y[idx])
                    loss = ce(purified(x[idx]), y[idx]) + self.w_share * share + self.w_adv * ce(adv_logits, y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += share.detach() * len(idx)
                shared = float(total) / len(x)
                progress.step(f"epoch {epoch + 1}/{self.epochs}: shared loss {shared:.4f}")
        return Defended(purified.eval(), details={"shared_loss": shared})
