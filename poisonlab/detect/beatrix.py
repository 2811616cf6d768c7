"""BEATRIX (Ma, Wang, Sun, Xue, Wen & Xiang, "The Beatrix Resurrections: Robust Backdoor Detection via Gram
Matrices", NDSS 2023; reference code github.com/wanlunsec/Beatrix, defenses/Beatrix/Beatrix.py).

A trigger changes not only which features fire but how they fire together; Gram matrices of the activations
capture those correlations, including high-order ones, and a triggered input's correlations fall outside the
range its predicted class shows on clean inputs.

1. Activations A (c, m) of ``layer`` (its output flattened per channel; default: the module producing the last
   spatial map of the forward pass, e.g. a cnn's last ReLU or pooling after its last conv, a ResNet's last block;
   measured on MNIST's `cnn`: AUROC 1.0 on its last pooled map or last ReLU's output, 0.86 on its last conv's
   own output) and, for
   each order p in ``orders`` (1..8, the reference's), the upper triangle of the p-th order Gram matrix,
   G_p = sign(A^p A^p^T) |A^p A^p^T|^(1/p).
2. Per class c (the model's prediction on clean inputs), from at most ``per_class`` (30, the reference's) clean
   inputs predicted c: the median and the median absolute deviation (MAD) of every Gram entry; the bounds are
   median -/+ 10 MAD (the reference's).
3. An input's deviation from its predicted class: the sum over entries and orders of
   relu(lo - g) / |lo + 1e-6| + relu(g - hi) / |hi + 1e-6|, divided by c^2 / 2 and by the number of orders.
4. Threshold of class c: the 95th percentile of the deviations of its clean inputs, each measured against
   statistics fitted without it (5 folds, the reference's threshold_determine). Score = deviation / threshold
   (comparable across classes); an input scoring above 1 is flagged.

The reference also tests the model (KMMD between the inputs it flags and the others, per class, a MAD anomaly
index over classes); that model-level step is left out: this is the input detector. Inputs predicted as a
class with fewer than ``min_per_class`` clean inputs are not scored (score 0, not flagged; details count them).
Statistics are fitted once per (model, clean) pair.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.detect.sentinet import conv_layer, images
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range

FOLDS = 5
WIDTH = 10.0  # the bounds are median -/+ WIDTH * MAD (the reference's)


@torch.no_grad()
def activations(model: nn.Module, module: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """module's output on x, flattened to (n, c, m) (a (n, d) output is (n, d, 1)), float64 on the CPU."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        handle.remove()
    out = torch.cat(seen) if seen else torch.empty(0, 1, 1, device="cpu")
    return out.reshape(out.shape[0], out.shape[1], -1).double().cpu()


@torch.no_grad()
def last_feature_map(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The module whose output is the last spatial map (n, c, h, w) with h w > 1 that a forward pass of x
    produces, in call order (a cnn's last ReLU or pooling after its last conv, a ResNet's last block); a
    ConfigError when the model produces none."""
    calls: list[nn.Module] = []

    def hook(module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
            calls.append(module)

    handles = [m.register_forward_hook(hook) for name, m in model.named_modules() if name]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ConfigError("BEATRIX needs a spatial feature map (n, c, h, w); the model produces none"
                          " (accepted: a convolutional model, or layer=<a module with such an output>)")
    return calls[-1]


def gram_features(a: torch.Tensor, p: int) -> torch.Tensor:
    """(n, c * c) the p-th order Gram matrix of each sample's (c, m) activations, upper triangle kept (zeros
    below), sign(G) |G|^(1/p) with G = A^p A^p^T."""
    ap = a ** p
    g = torch.matmul(ap, ap.transpose(1, 2)).triu()
    return (g.sign() * g.abs() ** (1.0 / p)).flatten(1)


def bounds(feats: dict[int, torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per order: (median - 10 MAD, median + 10 MAD) of every Gram entry over the rows."""
    out = {}
    for p, g in feats.items():
        med = g.median(dim=0).values
        mad = (g - med).abs().median(dim=0).values
        out[p] = (med - WIDTH * mad, med + WIDTH * mad)
    return out


def deviations(feats: dict[int, torch.Tensor], limits: dict[int, tuple[torch.Tensor, torch.Tensor]],
               channels: int) -> torch.Tensor:
    """Per row: sum over orders and entries of relu(lo - g)/|lo + 1e-6| + relu(g - hi)/|hi + 1e-6|,
    divided by channels^2 / 2 and by the number of orders."""
    first = next(iter(feats.values()))
    total = torch.zeros(len(first), dtype=torch.float64, device=first.device)
    for p, g in feats.items():
        lo, hi = limits[p]
        total += (torch.relu(lo - g) / (lo + 1e-6).abs()).sum(dim=1)
        total += (torch.relu(g - hi) / (hi + 1e-6).abs()).sum(dim=1)
    return total / (channels ** 2 / 2) / len(feats)


def fold_threshold(feats: dict[int, torch.Tensor], channels: int, quantile: float = 0.95) -> float:
    """The reference's threshold_determine: each fifth of the rows scored against the other four fifths' bounds;
    the sorted deviations' element at int(n * quantile)."""
    n = len(next(iter(feats.values())))
    held = []
    for k in range(FOLDS):
        out = torch.zeros(n, dtype=torch.bool, device="cpu")
        out[k * (n // FOLDS):(k + 1) * (n // FOLDS)] = True
        if out.all() or not out.any():
            continue
        limits = bounds({p: g[~out] for p, g in feats.items()})
        held.append(deviations({p: g[out] for p, g in feats.items()}, limits, channels))
    scores = torch.sort(torch.cat(held)).values
    return float(scores[min(len(scores) - 1, int(len(scores) * quantile))])


@DETECTORS.register("beatrix", reference="Ma et al., The Beatrix Resurrections: Robust Backdoor Detection via Gram "
                                          "Matrices, NDSS 2023")
class Beatrix:
    """Gram-matrix (orders 1..8) deviation from the predicted class's clean median -/+ 10 MAD; 5-fold 95% threshold."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, orders: list[int] | None = None, per_class: int = 30, min_per_class: int = 10,
                 quantile: float = 0.95, layer: str | None = None, batch_size: int = 512):
        orders = list(range(1, 9)) if orders is None else list(orders)
        if not orders or any(not isinstance(p, int) or p < 1 for p in orders):
            raise ConfigError(f"orders={orders!r} is not accepted; accepted: a list of positive integers,"
                              " e.g. [1, 2, 3]")
        self.orders = orders
        self.per_class = int(check_range("per_class", per_class, FOLDS))
        self.min_per_class = int(check_range("min_per_class", min_per_class, FOLDS))
        self.quantile = check_range("quantile", quantile, 0.0, 1.0, low_open=True, high_open=True)
        self.layer = layer
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self._fitted: tuple | None = None

    def _predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's predictions on x (CPU)."""
        with torch.no_grad():
            parts = [model(x[i:i + self.batch_size]).argmax(dim=1).cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device="cpu")

    def _features(self, model: nn.Module, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], int]:
        """({order: Gram features}, channels) of inputs x."""
        module = conv_layer(model, self.layer) if self.layer is not None else last_feature_map(model, x[:1])
        a = activations(model, module, x, self.batch_size)
        return {p: gram_features(a, p) for p in self.orders}, a.shape[1]

    def fit(self, model: nn.Module, clean) -> dict:
        """{class: (bounds, threshold)} from the clean inputs, computed once per (model, clean) pair."""
        if self._fitted is not None and self._fitted[0] is model and self._fitted[1] is clean:
            return self._fitted[2]
        x = images(clean, "BEATRIX", "the clean held-out set").to(model_device(model))
        pred = self._predict(model, x)
        per_class, channels = {}, None
        for c in torch.unique(pred).tolist():
            idx = torch.nonzero(pred == c).flatten()[:self.per_class]
            if len(idx) < self.min_per_class:
                continue
            class_feats, channels = self._features(model, x[idx.to(x.device)])
            per_class[c] = (bounds(class_feats), max(fold_threshold(class_feats, channels, self.quantile), 1e-12))
        state = {"classes": per_class, "channels": channels}
        self._fitted = (model, clean, state)
        return state

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = deviation / the predicted class's clean threshold; flagged above 1."""
        require(self, data=data, model=model, clean=clean)
        x = images(data, "BEATRIX", "the scanned inputs").to(model_device(model))
        was_training = model.training
        model.eval()
        scores = torch.zeros(len(x), dtype=torch.float64, device="cpu")
        try:
            state = self.fit(model, clean)
            pred = self._predict(model, x)
            for c, (limits, threshold) in state["classes"].items():
                idx = torch.nonzero(pred == c).flatten()
                for i in range(0, len(idx), self.batch_size):  # Gram features of a batch at a time (memory)
                    part = idx[i:i + self.batch_size]
                    feats, channels = self._features(model, x[part.to(x.device)])
                    scores[part] = deviations(feats, limits, channels) / threshold
        finally:
            model.train(was_training)
        known = torch.tensor(sorted(state["classes"]), dtype=torch.long, device="cpu")
        unscored = int((~torch.isin(pred, known)).sum())
        return Detection(scores, scores > 1.0,
                         {"thresholds": {c: t for c, (_, t) in state["classes"].items()}, "unscored": unscored,
                          "orders": self.orders})
