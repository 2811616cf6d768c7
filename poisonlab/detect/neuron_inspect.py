"""NeuronInspect (Huang, Alzantot & Srivastava, "NeuronInspect: Detecting Backdoors in Neural Networks via Output
Explanations", arXiv:1911.07399, 2019).

No trigger is reversed: the output layer is explained. For every label t and every clean image x:
1. saliency heatmap (Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", 2014): the gradient
   of the label's logit z_t with respect to the input, E = max over channels |dz_t/dx|, min-max scaled to
   [0, 1] per image (TrojanZoo's ``saliency_map``; a flat map is all zeros);
2. three features of the heatmaps, each scaled to [0, 1] so that the weights compare like with like:
   - sparseness: |E|_1 / (h w), the share of the image the explanation covers;
   - smoothness: the total variation sum |E[i+1, j] - E[i, j]| + |E[i, j+1] - E[i, j]| divided by the number of
     neighbouring pairs 2 h w - h - w;
   - persistence: each heatmap's ``top`` share of pixels (its k = ceil(top h w) largest, ties by position,
     pixels at 0 left out) marks where it points; per pixel, the share of images that mark it; persistence =
     the mean of the k largest shares (1: every image points at the same k pixels; about k / (h w) for
     unrelated maps; 0 for flat maps);
   sparseness and smoothness are the median over the images (a label's typical explanation), persistence a
   property of the set;
3. the features combined, low = backdoor-like (a target label's explanations are sparse, smooth and persistent:
   they point at the trigger whatever the image):
   F_t = w_sp sparseness_t + w_sm smoothness_t + w_pe (1 - persistence_t), ``weights`` = (w_sp, w_sm, w_pe);
4. Neural Cleanse's MAD outlier test on F: anomaly index (median - F_t) / (1.4826 MAD) > ``threshold`` (2)
   flags t as an attack target (stats.anomaly_index).
Score per label: that anomaly index (positive below the median).

Source of the definitions: the paper's abstract names the three features, their combination and an outlier
detection; its method text was not available here, so the formulas follow those names and TrojanZoo's
implementation (trojanvision/defenses/backdoor/model_inspection/neuron_inspect.py: a weighted sum, a MAD test),
with these differences from TrojanZoo: the features are scaled to [0, 1] before the weighted sum, with weights
(1, 1, 1) (TrojanZoo weighs the raw L1 norm and a Laplacian's L1 norm by 1e-5 and the persistence by 1, so
that the persistence decides alone); the MAD test is Neural Cleanse's signed one (TrojanZoo's is unsigned);
smoothness is the total variation (TrojanZoo: the L1 norm of a Laplacian); persistence is the
recurrence of each map's top pixels (TrojanZoo: the L1 norm of a chain of XORs of the maps binarised at their
median); every feature reads the defender's clean images only (TrojanZoo computes sparseness and smoothness on
images stamped with the attack's own trigger, which a defender does not have). ``top`` 0.05 is ours (a 3x3
trigger on 28 x 28 MNIST is 1.1% of the pixels, a 2x2 one on 8 x 8 digits 6%). Sizes, scaled to a CPU: at most
``samples`` (200) clean images (TrojanZoo: 10% of the training set); 0.4 s of CPU on MNIST (one thread).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor, model_device
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.rng import generator
from poisonlab.stats import anomaly_index


def saliency(model: nn.Module, x: torch.Tensor, label: int) -> torch.Tensor:
    """(n, h, w): max over channels of |d logit_label / dx|, min-max scaled to [0, 1] per image (0 where flat)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, label].sum(), x)
    e = grad.abs().amax(dim=1)
    low = e.flatten(1).amin(dim=1)[:, None, None]
    span = e.flatten(1).amax(dim=1)[:, None, None] - low
    return torch.where(span > 0, (e - low) / span.clamp_min(1e-30), torch.zeros_like(e))


def sparseness(e: torch.Tensor) -> torch.Tensor:
    """(n,): |E|_1 / (h w) per heatmap (n, h, w): the share of the image the explanation covers."""
    return e.abs().flatten(1).sum(dim=1) / (e.shape[-2] * e.shape[-1])


def smoothness(e: torch.Tensor) -> torch.Tensor:
    """(n,): total variation (sum of |differences| of vertically and horizontally adjacent pixels) per heatmap,
    divided by the number of adjacent pairs 2 h w - h - w."""
    h, w = e.shape[-2:]
    tv = (e[:, 1:, :] - e[:, :-1, :]).abs().flatten(1).sum(dim=1) + (e[:, :, 1:] - e[:, :, :-1]).abs().flatten(1).sum(1)
    return tv / max(1, 2 * h * w - h - w)


def top_count(e: torch.Tensor, top: float) -> int:
    """k = ceil(top h w), at least 1: how many pixels of a heatmap (n, h, w) mark where it points."""
    return max(1, math.ceil(top * e.shape[-2] * e.shape[-1]))


def top_pixels(e: torch.Tensor, top: float) -> torch.Tensor:
    """(n, h w) bool: each heatmap's k largest pixels (ties: the first in position order), leaving out pixels at 0
    (a flat map, scaled to all zeros, points nowhere)."""
    flat = e.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)[:, :top_count(e, top)]
    return torch.zeros_like(flat, dtype=torch.bool).scatter(1, order, True) & (flat > 0)


def persistence(e: torch.Tensor, top: float) -> torch.Tensor:
    """Scalar: the mean, over the k pixels marked most often, of the share of heatmaps whose top k marks them."""
    share = top_pixels(e, top).double().mean(dim=0)
    return share.topk(top_count(e, top)).values.mean()


@DETECTORS.register("neuron_inspect", reference="Huang, Alzantot & Srivastava, NeuronInspect: Detecting Backdoors in "
                                                "Neural Networks via Output Explanations, arXiv:1911.07399, 2019")
class NeuronInspect:
    """Saliency heatmaps of every label on clean images; sparse, smooth, persistent explanations are outliers."""

    inspects = "model"
    requires = ("model", "clean")

    def __init__(self, *, weights=(1.0, 1.0, 1.0), top: float = 0.05, threshold: float = 2.0, samples: int = 200,
                 batch_size: int = 256, seed: int = 0):
        weights = tuple(weights) if isinstance(weights, (list, tuple)) else weights
        if (not isinstance(weights, tuple) or len(weights) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in weights) or not any(v > 0 for v in weights)):
            raise ConfigError(f"weights={weights!r} is not accepted; accepted: three finite numbers >= 0, not all 0"
                              " (sparseness, smoothness, persistence)")
        self.weights = tuple(float(v) for v in weights)
        self.top = check_range("top", top, 0.0, 1.0, low_open=True)
        self.threshold = check_range("threshold", threshold, 0.0)
        self.samples = int(check_range("samples", samples, 2))
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.seed = int(seed)

    def clean_images(self, clean) -> torch.Tensor:
        """At most ``samples`` clean images (n, c, h, w), float, drawn with the seed; a DataError otherwise."""
        x = clean.x if isinstance(clean, Dataset) else as_tensor(clean)
        if x.dim() != 4 or len(x) < 2:
            raise DataError(f"NeuronInspect needs at least 2 clean images (n, c, h, w); got shape {tuple(x.shape)}")
        if len(x) > self.samples:
            pick = torch.randperm(len(x), generator=generator(self.seed, "neuron_inspect", "sample"), device="cpu")
            x = x[pick.to(x.device)[:self.samples]]
        return x.float()

    def heatmaps(self, model: nn.Module, x: torch.Tensor, label: int) -> torch.Tensor:
        """(n, h, w) saliency heatmaps of label on x, computed ``batch_size`` images at a time."""
        return torch.cat([saliency(model, x[i:i + self.batch_size], label) for i in range(0, len(x), self.batch_size)])

    def features(self, e: torch.Tensor) -> tuple[float, float, float]:
        """(sparseness, smoothness, persistence) of one label's heatmaps (n, h, w): the medians and the set's."""
        return (float(sparseness(e).median()), float(smoothness(e).median()), float(persistence(e, self.top)))

    def combine(self, sp: torch.Tensor, sm: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        """F = w_sp sparseness + w_sm smoothness + w_pe (1 - persistence) per label (low = backdoor-like)."""
        w_sp, w_sm, w_pe = self.weights
        return w_sp * sp + w_sm * sm + w_pe * (1.0 - pe)

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """One score per label (the anomaly index of F, positive below the median); flagged > threshold."""
        require(self, model=model, clean=clean)
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        x = self.clean_images(clean).to(model_device(frozen))
        with torch.no_grad():
            num_labels = int(frozen(x[:1]).shape[1])
        feats = []
        with progress.phase("NeuronInspect"):
            for t in range(num_labels):
                feats.append(self.features(self.heatmaps(frozen, x, t)))
                progress.step(f"NeuronInspect saliency: label {t + 1}/{num_labels}", last=t + 1 == num_labels)
        sp, sm, pe = (torch.tensor(v, dtype=torch.float64, device="cpu") for v in zip(*feats))
        combined = self.combine(sp, sm, pe)
        index = anomaly_index(combined)
        flagged = index > self.threshold
        return Detection(index, flagged, {"sparseness": sp.tolist(), "smoothness": sm.tolist(),
                                          "persistence": pe.tolist(), "combined": combined.tolist(),
                                          "flagged_labels": torch.nonzero(flagged).flatten().tolist()})
