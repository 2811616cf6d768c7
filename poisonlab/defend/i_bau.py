"""Implicit Backdoor Adversarial Unlearning, I-BAU (Zeng, Chen, Park, Mao, Jin & Jia, "Adversarial
Unlearning of Backdoors via Implicit Hypergradient", ICLR 2022), as a registered repair defense.

The minimax problem min_theta (1/n) sum_i L(f_theta(x_i + delta*(theta)), y_i), where delta*(theta) is a
universal perturbation maximising the clean loss, is solved round by round as in the paper's code:

1. perturbation: delta starts at 0 (one input's shape, shared by every input); per mini-batch of the
   clean set (``delta_epochs`` passes, 1 in the paper's code), one SGD step (lr ``delta_lr``, 10) on  -CE(f(x + delta), f(x).argmax) + 0.001 ||delta||^2,
   then delta is projected onto the L2 ball of radius ``radius`` (10);
2. unlearning: per mini-batch, the model takes one Adam step (lr 1e-3) along the implicit hypergradient of
   the outer loss CE(f(x + delta on a random ``portion`` of the batch), y) at the fixed point of the inner
   map  Phi(delta) = delta - 0.1 * grad_delta [-CE(f(x0 + delta), y0) + 0.001 ||delta||^2]  (x0 the first
   mini-batch):  dL/dtheta = dL/dtheta|direct + (dPhi/dtheta)^T v,  v = sum_{k<K} (dPhi/ddelta)^T^k dL/ddelta,
   the Neumann series of the paper's fixed-point method truncated at K = 5 terms.

Defaults are the paper's code (5 rounds, K 5, batch 100, the outer loss patching 1% of each batch).
Differs: the model stays in eval mode (batch norm on its running statistics), and ``portion`` can be
raised (1.0 is the paper's written objective, which patches every input).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.loop import minibatches
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import check_range
from poisonlab.rng import generator

REGULARISER = 0.001
INNER_LR = 0.1


def inner_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The perturbation's objective (minimised): -CE(model(x + delta), y) + 0.001 ||delta||^2."""
    return -F.cross_entropy(model(x + delta), y) + REGULARISER * delta.pow(2).sum()


def perturbation_step(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, lr: float) -> torch.Tensor:
    """One SGD step of the universal perturbation on inner_loss against the model's own predictions."""
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    delta = delta.detach().requires_grad_(True)
    grad, = torch.autograd.grad(inner_loss(model, x, pred, delta), delta)
    return (delta - lr * grad).detach()


def project(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """delta scaled into the L2 ball of the given radius (unchanged inside it)."""
    norm = float(delta.norm())
    return delta * min(1.0, radius / norm) if norm > 0 else delta


def hypergradient(model: nn.Module, delta: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                  outer, k: int) -> list[torch.Tensor]:
    """d outer(delta*(theta)) / d theta for every parameter, by the fixed-point implicit gradient with k
    Neumann terms (hypertorch's fixed_point, as the paper's code calls it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    delta = delta.detach().requires_grad_(True)
    grads = torch.autograd.grad(outer(delta), [delta] + params, allow_unused=True)
    g_delta = grads[0] if grads[0] is not None else torch.zeros_like(delta)
    direct = grads[1:]
    inner_grad, = torch.autograd.grad(inner_loss(model, x0, y0, delta), delta, create_graph=True)
    mapped = delta - INNER_LR * inner_grad
    v = torch.zeros_like(delta)
    for _ in range(k):
        v = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)[0] + g_delta
    implicit = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [sum(g for g in (d, i) if g is not None) if (d is not None or i is not None) else torch.zeros_like(p)
            for p, d, i in zip(params, direct, implicit)]


@DEFENSES.register("i_bau", reference="Zeng, Chen, Park, Mao, Jin & Jia, Adversarial Unlearning of Backdoors via"
                   " Implicit Hypergradient, ICLR 2022")
class IBAU:
    """Unlearn the worst universal perturbation by implicit-hypergradient minimax on the clean set."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, rounds: int = 5, k: int = 5, lr: float = 0.001, delta_lr: float = 10.0,
                 radius: float = 10.0, batch_size: int = 100, portion: float = 0.01, delta_epochs: int = 1):
        self.rounds = int(check_range("rounds", rounds, 1, 1000))
        self.k = int(check_range("k", k, 1, 100))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.delta_lr = check_range("delta_lr", delta_lr, 0.0, None, low_open=True)
        self.radius = check_range("radius", radius, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.portion = check_range("portion", portion, 0.0, 1.0)
        self.delta_epochs = int(check_range("delta_epochs", delta_epochs, 1, 1000))

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The unlearned copy; details: the last round's perturbation norm."""
        require(self, model=model, clean=clean)
        repaired = trainable_copy(model).eval()
        device = model_device(repaired)
        opt = torch.optim.Adam(repaired.parameters(), lr=self.lr)
        x0, y0 = next(minibatches(clean, self.batch_size, device, seed, "i-bau", 0))
        norm = 0.0
        for r in range(self.rounds):
            delta = torch.zeros((1,) + tuple(clean.x.shape[1:]), device=device)
            for e in range(self.delta_epochs):
                for x, _ in minibatches(clean, self.batch_size, device, seed, "i-bau-delta", r, e):
                    delta = perturbation_step(repaired, x, delta, self.delta_lr)
            delta = project(delta, self.radius)
            norm = float(delta.norm())
            for b, (x, y) in enumerate(minibatches(clean, self.batch_size, device, seed, "i-bau", r)):
                patched = self._patched_rows(len(y), x.dim(), seed, r, b).to(device)
                outer = lambda d, x=x, y=y, patched=patched: F.cross_entropy(repaired(x + d * patched), y)  # noqa: E731
                grads = hypergradient(repaired, delta, x0, y0, outer, self.k)
                opt.zero_grad(set_to_none=True)
                for p, g in zip([p for p in repaired.parameters() if p.requires_grad], grads):
                    p.grad = g.detach()
                opt.step()
            progress.step(f"i-bau round {r + 1}/{self.rounds}: perturbation norm {norm:.3f}", last=True)
        return Defended(repaired.eval(), details={"perturbation_norm": norm})

    def _patched_rows(self, n: int, dims: int, seed: int, r: int, b: int) -> torch.Tensor:
        """(n, 1, ...) 0/1 weights (dims dimensions): a random `portion` of the batch's rows (at least one when
        portion > 0) carry the perturbation."""
        count = max(1, int(n * self.portion)) if self.portion > 0 else 0
        rows = torch.randperm(n, generator=generator(seed, "i-bau-rows", r, b), device="cpu")[:count]
        weights = torch.zeros(n, device="cpu")
        weights[rows] = 1.0
        return weights.view(n, *([1] * (dims - 1)))
