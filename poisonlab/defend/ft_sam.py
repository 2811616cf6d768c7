"""Fine-tuning with sharpness-aware minimisation, FT-SAM (Zhu, Wei, Shen, Fan & Wu, "Enhancing Fine-Tuning
Based Backdoor Defense with Sharpness-Aware Minimization", ICCV 2023), as a registered repair defense.

The backdoored model is fine-tuned on the clean set, every step a SAM step (Foret et al., ICLR 2021):
with g the gradient of the (label-smoothed) clean loss at w, the weights move to the worst nearby point
w + e, e = rho * g / ||g|| (||g|| the norm over all parameters), the gradient is taken there, and the
optimiser (SGD, momentum 0.9) applies it at w. A large rho pushes the weights out of the sharp region
the backdoor sits in (the paper's Sec. 4: backdoor neurons have large weight norms).

Defaults: BackdoorBench's FT-SAM config (label smoothing 0.1, lr 0.01, weight decay 5e-4) with its 100
epochs scaled to 20 for a CPU and a constant learning rate where it anneals; rho 0.75 where BackdoorBench
has 2: plain SAM at rho 2 wrecks the zoo's small models (bars cnn: clean accuracy 1.0 -> 0.37), 0.75
keeps them. Differs: the plain SAM perturbation for every parameter (the paper scales it per neuron,
adaptive SAM, between rho_min and rho_max).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.loop import minibatches, sgd
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import check_range


def sam_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, rho: float,
             label_smoothing: float = 0.0) -> float:
    """One SAM step: the gradient at w + rho * g / ||g||, applied by opt at w; returns the loss at w."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    grads = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    scale = rho / (norm + 1e-12)
    shifts = [g * scale for g in grads]
    with torch.no_grad():
        for p, e in zip(params, shifts):
            p.add_(e)
    sharp = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    sharp_grads = torch.autograd.grad(sharp, params)
    with torch.no_grad():
        for p, e in zip(params, shifts):
            p.sub_(e)
    opt.zero_grad(set_to_none=True)
    for p, g in zip(params, sharp_grads):
        p.grad = g
    opt.step()
    return float(loss.detach())


@DEFENSES.register("ft_sam", reference="Zhu, Wei, Shen, Fan & Wu, Enhancing Fine-Tuning Based Backdoor Defense with"
                   " Sharpness-Aware Minimization, ICCV 2023")
class FTSAM:
    """Fine-tune the backdoored model on the clean set with sharpness-aware minimisation."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, rho: float = 0.75, epochs: int = 20, lr: float = 0.01, batch_size: int = 64,
                 weight_decay: float = 5e-4, label_smoothing: float = 0.1):
        self.rho = check_range("rho", rho, 0.0, None)
        self.epochs = int(check_range("epochs", epochs, 1, 1000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.weight_decay = check_range("weight_decay", weight_decay, 0.0, None)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The fine-tuned copy; details: the last epoch's mean clean loss."""
        require(self, model=model, clean=clean)
        tuned = trainable_copy(model).train()
        opt = sgd(tuned.parameters(), self.lr, weight_decay=self.weight_decay)
        device, mean = model_device(tuned), 0.0
        for epoch in range(self.epochs):
            losses = [sam_step(tuned, opt, x, y, self.rho, self.label_smoothing) * len(y)
                      for x, y in minibatches(clean, self.batch_size, device, seed, "ft-sam", epoch)]
            mean = sum(losses) / len(clean)
            progress.step(f"ft-sam epoch {epoch + 1}/{self.epochs}: loss {mean:.4f}")
        return Defended(tuned.eval(), details={"loss": mean})
