"""Randomized smoothing at inference (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
Smoothing", ICML 2019, Algorithm PREDICT), as a registered inference-stage defense.

The smoothed classifier g(x) is the class the base model predicts most often on x + N(0, sigma^2 I). PREDICT draws
``n`` noisy copies of x, counts the two most frequent classes (n_A >= n_B) and returns the top one only if the
two-sided binomial test of n_A successes in n_A + n_B trials at p = 1/2 has a p-value <= ``alpha``; otherwise it
abstains (here: the input is rejected, Defended.reject). A small trigger is drowned by noise that the clean
content survives, which is why smoothing weakens patch and blended backdoors (Wang et al. 2020, "On Certifying
Robustness against Backdoor Attacks via Randomized Smoothing").

Cohen et al. train the base classifier under the same Gaussian noise; a suspect model was not, so before
deploying, a copy is fine-tuned on the defender's clean set with every batch noised at sigma (``noise_epochs``
epochs at ``lr``; 0 keeps the model as it is, which on our tests costs most of the clean accuracy at sigma 0.5).
Defaults: sigma = 0.25 (Cohen et al.'s smallest), n = 100, alpha = 0.001 (the paper's PREDICT experiments),
noise fine-tuning 5 epochs at lr 0.01 (CPU scale; Cohen et al. train from scratch under noise).
The noise for an input is drawn from a CPU generator seeded by (seed, the input's bytes): the same input always
gets the same vote, whatever the batch it comes in, so the deployed model's prediction and its reject mask agree.
"""

from __future__ import annotations

import copy
import hashlib
import math

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import check_range
from poisonlab.rng import generator


def noise_fine_tune(model: nn.Module, clean: Dataset, sigma: float, epochs: int, lr: float, batch_size: int,
                    seed: int) -> nn.Module:
    """A copy of model fine-tuned (SGD, momentum 0.9) on clean inputs plus N(0, sigma^2) noise drawn per batch."""
    tuned = trainable_copy(model).train()
    opt = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9)
    device = model_device(model)
    x, y = clean.x.to(device), clean.y.to(device)
    for epoch in range(epochs):
        g = generator(seed, "smoothing", "noise", epoch)
        order = torch.randperm(len(x), generator=g, device="cpu").to(device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            noise = torch.randn(x[idx].shape, generator=g, device="cpu").to(device, x.dtype)
            loss = nn.functional.cross_entropy(tuned(x[idx] + sigma * noise), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return tuned.eval()


def binomial_two_sided_p(n_a: int, n_b: int) -> float:
    """Exact two-sided p-value of n_a successes in n_a + n_b trials at p = 1/2 (n_a >= n_b): min(1, 2 P(X >= n_a))."""
    total = n_a + n_b
    if total == 0:
        return 1.0
    k = max(n_a, n_b)
    tail = sum(math.comb(total, i) for i in range(k, total + 1)) / 2 ** total
    return min(1.0, 2 * tail)


def input_generator(seed: int, x: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded by seed and the bytes of one input (so an input's noise does not depend on its batch)."""
    digest = hashlib.sha256(x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return generator(seed, "smoothing", digest)


class Smoothed(nn.Module):
    """g(x): the base model's vote counts over n Gaussian-noised copies of each input (argmax = the smoothed class)."""

    def __init__(self, model: nn.Module, sigma: float, n: int, seed: int, batch_size: int = 1000):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.sigma, self.n, self.seed, self.batch_size = sigma, n, seed, batch_size

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(len(x), classes) vote counts, as floats."""
        device = model_device(self.model)
        rows = max(1, self.batch_size // self.n)  # inputs whose noisy copies go through the model together
        votes = []
        for start in range(0, len(x), rows):
            chunk = x[start:start + rows]
            noise = torch.stack([torch.randn((self.n, *row.shape), generator=input_generator(self.seed, row),
                                             device="cpu") for row in chunk])
            noisy = chunk.to(device)[:, None] + self.sigma * noise.to(device, chunk.dtype)
            logits = self.model(noisy.flatten(0, 1))
            votes.append(nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1]).view(len(chunk), self.n, -1).sum(dim=1))
        return torch.cat(votes).float().to(x.device)

    def abstains(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        """Whether PREDICT abstains on each input: its top-two vote counts fail the binomial test at alpha."""
        top = self(x).topk(2, dim=1).values.long().cpu()
        return torch.tensor([binomial_two_sided_p(int(a), int(b)) > alpha for a, b in top.tolist()], dtype=torch.bool,
                            device="cpu")


@DEFENSES.register("randomized_smoothing", reference="Cohen, Rosenfeld & Kolter, Certified Adversarial Robustness"
                                                     " via Randomized Smoothing (PREDICT), ICML 2019")
class RandomizedSmoothing:
    """Deploy the Gaussian-smoothed classifier; reject the inputs on which its vote is not significant."""

    stage = "inference"

    def __init__(self, *, sigma: float = 0.25, n: int = 100, alpha: float = 0.001, noise_epochs: int = 5,
                 lr: float = 0.01, batch_size: int = 32):
        self.sigma = check_range("sigma", sigma, 0.0, None, low_open=True)
        self.n = int(check_range("n", n, 1, 1_000_000))
        self.alpha = check_range("alpha", alpha, 0.0, 1.0, low_open=True)
        self.noise_epochs = int(check_range("noise_epochs", noise_epochs, 0, 10000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.requires = ("model", "clean") if self.noise_epochs else ("model",)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The smoothed (noise-fine-tuned) model and its abstain test as reject."""
        require(self, model=model, clean=clean)
        if self.noise_epochs:
            model = noise_fine_tune(model, clean, self.sigma, self.noise_epochs, self.lr, self.batch_size, seed)
        smoothed = Smoothed(model, self.sigma, self.n, seed).eval()
        return Defended(smoothed, reject=lambda x: smoothed.abstains(x, self.alpha),
                        details={"sigma": self.sigma, "n": self.n, "alpha": self.alpha})
