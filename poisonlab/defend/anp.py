"""Adversarial Neuron Pruning, ANP (Wu & Wang, "Adversarial Neuron Perturbations Expose Backdoors in
Pretrained Models", NeurIPS 2021), as a registered repair defense.

Backdoor neurons are the ones whose small perturbation changes the output most. Each neuron i (a
batch-norm channel, or a conv/linear unit in a model without batch norm: defend/neuron_masks.py) gets
a mask m_i in [0, 1] (starts at 1) and multiplicative perturbations delta_i, xi_i in [-eps, eps] on its
weight and bias parts. Per mini-batch of the clean set (the paper's Algorithm 1 and code):

1. inner step: delta, xi drawn uniformly in [-eps, eps], then one signed-gradient ascent step on the
   clean loss, delta <- clip(delta + eps * sign(dL/d delta), -eps, eps) (likewise xi);
2. mask step: one SGD step (lr 0.2, momentum 0.9) on alpha * L(m) + (1 - alpha) * L(m + delta, 1 + xi),
   then m clipped to [0, 1].

After ``steps`` mini-batches the neurons with m < ``threshold`` (or the ``fraction`` with the smallest m)
are pruned: their weight set to 0 (the paper's pruning; the bias stays). Defaults are the paper's
(eps 0.4, alpha 0.2, mask lr 0.2, batch 128, threshold 0.2) with its 2,000 iterations scaled to 300 for a
CPU. Differs: the masks are optimised with the model in eval mode (batch norm on its running
statistics; the paper's code uses batch statistics), which keeps small clean sets from moving them.
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.base import Defended, require
from poisonlab.defend.loop import minibatches, sgd
from poisonlab.defend.neuron_masks import NeuronMasks, neuron_layers, prune
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.rng import generator


def perturb_step(model, masks: NeuronMasks, x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    """ANP's inner maximisation, one step: each perturbation moves by eps * sign of the clean loss's
    gradient and is clipped to [-eps, eps]."""
    masks.perturbed = True
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, masks.noise())
    with torch.no_grad():
        for noise, g in zip(masks.noise(), grads):
            noise.add_(eps * g.sign()).clamp_(-eps, eps)


def mask_step(model, masks: NeuronMasks, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              alpha: float) -> float:
    """ANP's outer step: SGD on alpha * natural loss + (1 - alpha) * perturbed loss w.r.t. the masks, then
    the masks clipped to [0, 1]; returns the loss."""
    masks.perturbed = True
    robust = F.cross_entropy(model(x), y)
    masks.perturbed = False
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * robust
    grads = torch.autograd.grad(loss, masks.mask)
    opt.zero_grad(set_to_none=True)
    for m, g in zip(masks.mask, grads):
        m.grad = g
    opt.step()
    masks.clip_mask()
    return float(loss.detach())


def random_noise(masks: NeuronMasks, eps: float, seed: int, step: int) -> None:
    """Each perturbation drawn uniformly in [-eps, eps] (CPU generator, then moved)."""
    g = generator(seed, "anp-noise", step)
    with torch.no_grad():
        for noise in masks.noise():
            noise.copy_(((torch.rand(noise.shape, generator=g, device="cpu") * 2 - 1) * eps).to(noise.device))


def smallest(values: torch.Tensor, threshold: float, fraction: float | None) -> torch.Tensor:
    """Which neurons to prune: values < threshold, or (fraction given) that share with the smallest values."""
    if fraction is None:
        return values < threshold
    flags = torch.zeros(len(values), dtype=torch.bool, device=values.device)
    flags[torch.argsort(values)[:int(round(fraction * len(values)))]] = True
    return flags


@DEFENSES.register("anp", reference="Wu & Wang, Adversarial Neuron Perturbations Expose Backdoors in Pretrained"
                   " Models, NeurIPS 2021")
class ANP:
    """Learn neuron masks robust to adversarial neuron perturbations; prune the neurons with small masks."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, eps: float = 0.4, alpha: float = 0.2, mask_lr: float = 0.2, steps: int = 300,
                 batch_size: int = 128, threshold: float = 0.2, fraction: float | None = None):
        self.eps = check_range("eps", eps, 0.0, None)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.mask_lr = check_range("mask_lr", mask_lr, 0.0, None, low_open=True)
        self.steps = int(check_range("steps", steps, 1, 1_000_000))
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)
        self.fraction = None if fraction is None else check_range("fraction", fraction, 0.0, 1.0)
        if self.eps == 0 and self.alpha < 1:
            raise ConfigError("anp: eps=0 leaves nothing to perturb; accepted: eps > 0, or alpha=1 (masks on the clean loss)")

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The pruned copy; details: neurons pruned, neurons in all, the smallest mask value."""
        require(self, model=model, clean=clean)
        values = self.mask_values(model, clean, seed)
        flags = smallest(values, self.threshold, self.fraction)
        repaired = prune(model, neuron_layers(model), flags)
        return Defended(repaired, details={"pruned": int(flags.sum()), "neurons": len(values),
                                           "min_mask": float(values.min())})

    def mask_values(self, model, clean, seed: int) -> torch.Tensor:
        """The learned mask of every neuron (neuron_layers order), on the CPU."""
        work = copy.deepcopy(model).requires_grad_(False).eval()
        masks = NeuronMasks(work)
        opt = sgd(masks.mask, self.mask_lr)
        device, step, epoch = model_device(work), 0, 0
        try:
            while step < self.steps:
                for x, y in minibatches(clean, self.batch_size, device, seed, "anp", epoch):
                    if self.eps > 0:
                        random_noise(masks, self.eps, seed, step)
                        perturb_step(work, masks, x, y, self.eps)
                    loss = mask_step(work, masks, opt, x, y, self.alpha)
                    step += 1
                    progress.step(f"anp step {step}/{self.steps}: loss {loss:.4f}")
                    if step == self.steps:
                        break
                epoch += 1
        finally:
            masks.remove()
        return masks.values().cpu()
