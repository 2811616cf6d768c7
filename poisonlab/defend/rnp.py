"""Reconstructive Neuron Pruning, RNP (Li, Lyu, Ma, Koren, Lyu, Li & Jiang, "Reconstructive Neuron
Pruning for Backdoor Defense", ICML 2023), as a registered repair defense.

1. Unlearn: a copy of the backdoored model takes SGD steps that MAXIMISE the clean-set cross-entropy
   (gradient norm clipped to 20), epoch after epoch until its accuracy on the clean set over an epoch
   falls to ``clean_threshold`` (0.2) or ``unlearn_epochs`` pass. Clean features are destroyed; the
   backdoor, which the clean data never exercises, survives.
2. Recover: on the unlearned model, per-neuron masks m in [0, 1] (starting at 1; batch-norm channels, or
   conv/linear units without batch norm: defend/neuron_masks.py) are trained to MINIMISE alpha * CE on
   the clean set (the weights frozen), SGD lr 0.2, momentum 0.9, clipped to [0, 1] after each step.
   Restoring clean accuracy re-opens the clean neurons; the backdoor neurons keep small masks.
3. Prune: the neurons with m < ``threshold`` (or the ``fraction`` with the smallest m) are removed from
   the ORIGINAL backdoored model (weight set to 0, as ANP).

Defaults: the paper's code and BackdoorBench (unlearning lr 0.01, momentum 0.9, weight decay 5e-4, clean
threshold 0.2, mask lr 0.2, alpha 0.2, threshold 0.2) with its 20 recovery epochs kept and at most 20
unlearning epochs. Differs: the masks are learned in eval mode (batch norm on the unlearned model's
running statistics), as in poisonlab's ANP.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.anp import smallest
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.loop import minibatches, sgd
from poisonlab.defend.neuron_masks import NeuronMasks, neuron_layers, prune
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import check_range

MAX_GRAD_NORM = 20.0


def unlearn(model: nn.Module, clean, lr: float, epochs: int, clean_threshold: float, batch_size: int,
            seed: int) -> tuple[nn.Module, float]:
    """(a copy of model trained to maximise the clean loss until its epoch accuracy <= clean_threshold,
    that accuracy)."""
    work = trainable_copy(model).train()
    opt = sgd(work.parameters(), lr, weight_decay=5e-4)
    device, acc = model_device(work), 1.0
    for epoch in range(epochs):
        right = torch.zeros((), device=device)
        for x, y in minibatches(clean, batch_size, device, seed, "rnp-unlearn", epoch):
            logits = work(x)
            opt.zero_grad(set_to_none=True)
            (-F.cross_entropy(logits, y)).backward()
            nn.utils.clip_grad_norm_(work.parameters(), MAX_GRAD_NORM)
            opt.step()
            right += (logits.detach().argmax(1) == y).sum()
        acc = float(right) / len(clean)
        progress.step(f"rnp unlearning epoch {epoch + 1}: clean accuracy {acc:.3f}")
        if acc <= clean_threshold:
            break
    return work.eval(), acc


def recover_masks(unlearned: nn.Module, clean, lr: float, alpha: float, epochs: int, batch_size: int,
                  seed: int) -> torch.Tensor:
    """The neuron masks (neuron_layers order, on the CPU) that minimise alpha * CE on the clean set."""
    work = copy.deepcopy(unlearned).requires_grad_(False).eval()
    masks = NeuronMasks(work)
    opt = sgd(masks.mask, lr)
    device = model_device(work)
    try:
        for epoch in range(epochs):
            for x, y in minibatches(clean, batch_size, device, seed, "rnp-recover", epoch):
                opt.zero_grad(set_to_none=True)
                (alpha * F.cross_entropy(work(x), y)).backward()
                opt.step()
                masks.clip_mask()
            progress.step(f"rnp recovering epoch {epoch + 1}/{epochs}")
    finally:
        masks.remove()
    return masks.values().cpu()


@DEFENSES.register("rnp", reference="Li, Lyu, Ma, Koren, Lyu, Li & Jiang, Reconstructive Neuron Pruning for Backdoor"
                   " Defense, ICML 2023")
class RNP:
    """Unlearn the clean task, recover it with neuron masks, prune the neurons left masked."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, unlearn_lr: float = 0.01, unlearn_epochs: int = 20, clean_threshold: float = 0.2,
                 mask_lr: float = 0.2, alpha: float = 0.2, recover_epochs: int = 20, batch_size: int = 128,
                 threshold: float = 0.2, fraction: float | None = None):
        self.unlearn_lr = check_range("unlearn_lr", unlearn_lr, 0.0, None, low_open=True)
        self.unlearn_epochs = int(check_range("unlearn_epochs", unlearn_epochs, 1, 1000))
        self.clean_threshold = check_range("clean_threshold", clean_threshold, 0.0, 1.0)
        self.mask_lr = check_range("mask_lr", mask_lr, 0.0, None, low_open=True)
        self.alpha = check_range("alpha", alpha, 0.0, None, low_open=True)
        self.recover_epochs = int(check_range("recover_epochs", recover_epochs, 1, 1000))
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)
        self.fraction = None if fraction is None else check_range("fraction", fraction, 0.0, 1.0)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The pruned copy; details: the unlearned model's clean accuracy, neurons pruned and in all."""
        require(self, model=model, clean=clean)
        unlearned, acc = unlearn(model, clean, self.unlearn_lr, self.unlearn_epochs, self.clean_threshold,
                                 self.batch_size, seed)
        values = recover_masks(unlearned, clean, self.mask_lr, self.alpha, self.recover_epochs, self.batch_size, seed)
        flags = smallest(values, self.threshold, self.fraction)
        repaired = prune(model, neuron_layers(model), flags)
        return Defended(repaired, details={"unlearned_accuracy": acc, "pruned": int(flags.sum()),
                                           "neurons": len(values)})
