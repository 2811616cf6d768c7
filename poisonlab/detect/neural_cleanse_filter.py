"""Neural Cleanse input filtering (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks
in Neural Networks", IEEE S&P 2019, Sec. VI-A "Filter for detecting adversarial inputs").

Neural Cleanse (detect/neural_cleanse.py) reverse-engineers a minimal trigger per label and names the
labels whose trigger is an outlier (anomaly index > ``threshold``). For the flagged label with the largest
index (or the given ``label``), the feature units (inputs of ``feature_layer``, default the last
nn.Linear: the penultimate neurons) are ranked by how much the reversed trigger raises their mean
activation on clean inputs; the top ``top_fraction`` (the paper's 1%, at least one unit) are the
trigger's neurons, never fewer than ``min_neurons`` (5: the paper's 1% of the 512-unit layers of its
models; 1% of a small model's 32 units would be a single unit: on the tests' backdoored cnn the AUROC of
triggered against clean inputs is 0.85 with 1 unit, 1.0 with 4, 0.95 with 5, 0.94 with 8). An input's score is the mean activation of those neurons; the boundary is the
(1 - ``fpr``) quantile of the clean inputs' scores (the paper reports 5% FPR), and inputs above it are
flagged. No label flagged and none given: nothing is flagged (details say so).

The reversal and the boundary are fitted once per (model, clean) pair and reused while the same two
objects are scanned again (``input_filter`` scans every batch handed to the deployed model).
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.features import embed
from poisonlab.detect.neural_cleanse import NeuralCleanse, apply_trigger
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor, model_device
from poisonlab.errors import DataError, check_range


def trigger_neurons(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, count: int,
                    feature_layer: str | None = None) -> torch.Tensor:
    """Indices of the count feature units whose mean activation rises most when the trigger is stamped on x."""
    rise = (embed(model, apply_trigger(x, mask, pattern), feature_layer=feature_layer).mean(dim=0)
            - embed(model, x, feature_layer=feature_layer).mean(dim=0))
    return torch.argsort(rise, descending=True, stable=True)[:count]


def _images(x, what: str) -> torch.Tensor:
    x = x.x if isinstance(x, Dataset) else as_tensor(x)
    if x.dim() != 4:
        raise DataError(f"Neural Cleanse filtering needs images (n, c, h, w) for {what}; got shape {tuple(x.shape)}")
    return x.float()


@DETECTORS.register("neural_cleanse_filter",
                    reference="Wang et al., Neural Cleanse: Identifying and Mitigating Backdoor Attacks in NNs, "
                              "S&P 2019 (Sec. VI-A input filter)")
class NeuralCleanseFilter:
    """Flag inputs whose reversed-trigger neurons fire above the clean (1 - fpr) quantile."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, top_fraction: float = 0.01, min_neurons: int = 5, fpr: float = 0.05, label: int | None = None,
                 steps: int = 800, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                 samples: int = 512, threshold: float = 2.0, feature_layer: str | None = None, seed: int = 0):
        self.top_fraction = check_range("top_fraction", top_fraction, 0.0, 1.0, low_open=True)
        self.min_neurons = int(check_range("min_neurons", min_neurons, 1))
        self.fpr = check_range("fpr", fpr, 0.0, 1.0, high_open=True)
        self.label = None if label is None else int(check_range("label", label, 0))
        self.reverser = NeuralCleanse(steps=steps, batch_size=batch_size, lr=lr, init_cost=init_cost,
                                      samples=samples, threshold=threshold, seed=seed)
        self.feature_layer = feature_layer
        self._fitted: tuple | None = None

    def fit(self, model: nn.Module, clean) -> dict:
        """{label, neurons, boundary, ...} for (model, clean), computed once per pair of objects."""
        if self._fitted is not None and self._fitted[0] is model and self._fitted[1] is clean:
            return self._fitted[2]
        found = self.reverser.scan(model=model, clean=clean)
        label = self.label
        if label is None and found.details["flagged_labels"]:
            label = max(found.details["flagged_labels"], key=lambda t: float(found.scores[t]))
        state = {"label": label, "anomaly_index": found.scores.tolist()}
        if label is not None:
            x = _images(clean, "the clean set").to(model_device(model))
            width = embed(model, x[:1], feature_layer=self.feature_layer).shape[1]
            count = min(width, max(self.min_neurons, int(round(self.top_fraction * width))))
            mask, pattern = found.details["masks"][label].to(x.device), found.details["patterns"][label].to(x.device)
            neurons = trigger_neurons(model, x, mask, pattern, count, self.feature_layer)
            clean_scores = self.activation(model, x, neurons)
            state.update(neurons=neurons, boundary=float(torch.quantile(clean_scores.double(), 1.0 - self.fpr)))
        self._fitted = (model, clean, state)
        return state

    def activation(self, model: nn.Module, x: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Mean activation of the given feature units on each input (CPU)."""
        return embed(model, x, feature_layer=self.feature_layer)[:, neurons.to(x.device)].mean(dim=1).cpu()

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = the reversed-trigger neurons' mean activation; flagged above the clean boundary."""
        require(self, data=data, model=model, clean=clean)
        x = _images(data, "the scanned inputs").to(model_device(model))
        state = self.fit(model, clean)
        details = {"label": state["label"], "anomaly_index": state["anomaly_index"]}
        if state["label"] is None:
            zero = torch.zeros(len(x), dtype=torch.float64)
            return Detection(zero, zero.bool(), {**details, "note": "no label flagged: nothing filtered"})
        scores = self.activation(model, x, state["neurons"])
        return Detection(scores, scores > state["boundary"],
                         {**details, "boundary": state["boundary"], "neurons": state["neurons"].tolist()})
