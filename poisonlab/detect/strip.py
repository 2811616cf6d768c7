"""STRIP (Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019).

At inference time each input x is superimposed with N held-out clean images o_1..o_N; a
trojaned input keeps predicting the target whatever is superimposed, so its predictions
have low entropy. Entropy of one perturbed prediction: H_n = -sum_i p_i log2 p_i; the input's
score is the mean H = (1/N) sum_n H_n. The detection boundary comes from a normal fit to
the entropies of clean inputs: boundary = mu + sigma * Phi^-1(FRR), so a chosen share FRR
(default 1%) of clean inputs is rejected; inputs with H below the boundary are flagged.

Superimposition ``mode="add"`` is the paper's cv2.addWeighted(x, 1, o, 1, 0): a saturating
sum clip(x + o, 0, 1); ``mode="blend"`` is (1 - alpha) x + alpha o.
"""

from __future__ import annotations

import math

from statistics import NormalDist

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.device import as_tensor, model_device
from poisonlab.rng import generator

MODES = ("add", "blend")


def superimpose(x: torch.Tensor, overlays: torch.Tensor, mode: str = "add", alpha: float = 0.5) -> torch.Tensor:
    """x (n, c, h, w) superimposed with overlays (n, N, c, h, w) -> (n, N, c, h, w)."""
    if mode == "add":
        return (x.unsqueeze(1) + overlays).clamp(0.0, 1.0)
    return (1.0 - alpha) * x.unsqueeze(1) + alpha * overlays


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (bits) of softmax(logits) along the last dimension."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1) / math.log(2.0)


def _images(x, what: str) -> torch.Tensor:
    x = x.x if isinstance(x, Dataset) else as_tensor(x)
    if x.dim() != 4:
        raise DataError(f"STRIP needs images (n, c, h, w) for {what}; got shape {tuple(x.shape)}")
    return x.float()


@DETECTORS.register("strip", reference="Gao et al., STRIP: A Defence Against Trojan Attacks on DNNs, ACSAC 2019")
class Strip:
    """Mean Shannon entropy of predictions on N clean superimpositions; normal-fit boundary at FRR."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, n_overlays: int = 50, frr: float = 0.01, mode: str = "add", alpha: float = 0.5,
                 batch_size: int = 256, seed: int = 0):
        if mode not in MODES:
            raise ConfigError(f"mode='{mode}' is not known; accepted: {', '.join(MODES)}")
        self.n_overlays = int(check_range("n_overlays", n_overlays, 1))
        self.frr = check_range("frr", frr, 0.0, 1.0, low_open=True, high_open=True)
        self.mode, self.alpha = mode, check_range("alpha", alpha, 0.0, 1.0)
        self.batch_size, self.seed = int(check_range("batch_size", batch_size, 1)), int(seed)

    @torch.no_grad()
    def entropies(self, model: nn.Module, x: torch.Tensor, pool: torch.Tensor, purpose: str) -> torch.Tensor:
        """Mean entropy over n_overlays superimpositions (overlays drawn from pool) for each input of x."""
        if len(pool) == 0:
            raise DataError("STRIP needs at least one held-out clean image to superimpose; got none")
        idx = torch.randint(len(pool), (len(x), self.n_overlays), generator=generator(self.seed, "strip", purpose),
                            device="cpu").to(pool.device)  # drawn on the CPU, moved
        was_training = model.training
        model.eval()
        out = []
        step = max(1, self.batch_size // self.n_overlays)
        try:
            for i in range(0, len(x), step):
                mixed = superimpose(x[i:i + step], pool[idx[i:i + step]], self.mode, self.alpha)
                logits = model(mixed.flatten(0, 1)).view(mixed.shape[0], self.n_overlays, -1)
                out.append(entropy_bits(logits).mean(dim=1))
        finally:
            model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=x.device)

    def boundary(self, clean_entropies: torch.Tensor) -> tuple[float, float, float]:
        """(boundary, mu, sigma): the FRR quantile of a normal fitted to clean entropies."""
        mu, sigma = float(clean_entropies.mean()), float(clean_entropies.std())
        return mu + max(sigma, 1e-12) * NormalDist().inv_cdf(self.frr), mu, sigma

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Flag the inputs data (images or a Dataset) whose mean entropy is below the boundary fitted on clean.

        clean: held-out clean images (or a Dataset), used both as the superimposition pool and to fit
        the boundary (each clean image's entropy is measured against overlays from the same pool).
        Score = -H (higher = more suspicious).
        """
        require(self, data=data, model=model, clean=clean)
        x, pool = _images(data, "the scanned inputs"), _images(clean, "the clean held-out set")
        dev = model_device(model)  # the forward passes run on the model's device; the scores come back on the CPU
        x, pool = x.to(dev), pool.to(dev)
        if x.shape[1:] != pool.shape[1:]:
            raise DataError(f"inputs have shape {tuple(x.shape[1:])} but clean images {tuple(pool.shape[1:])}")
        clean_h = self.entropies(model, pool, pool, "clean")
        bound, mu, sigma = self.boundary(clean_h)
        h = self.entropies(model, x, pool, "scan").cpu()
        return Detection(-h, h < bound, {"entropy": h.tolist(), "boundary": bound, "clean_mean": mu,
                                          "clean_std": sigma, "frr": self.frr,
                                          "clean_rejected": float((clean_h < bound).double().mean())})
