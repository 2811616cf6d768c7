"""SentiNet (Chou, Tramèr & Pellegrino, "SentiNet: Detecting Localized Universal Attacks Against Deep Learning
Systems", IEEE S&P Workshops (DLS) 2020).

A localized trigger (a patch) is the part of an input that decides its prediction, and it keeps deciding it
wherever it is pasted. For each input x with prediction y:

1. Salient region: the Grad-CAM map of y (Selvaraju et al. 2017) on ``layer`` (default: the last nn.Conv2d),
   alpha_k = mean_(i,j) d logit_y / d A_k(i,j), cam = ReLU(sum_k alpha_k A_k), upsampled (bilinear) to the input
   and divided by its maximum; the mask m = cam >= ``mask_threshold`` (0.25: the paper names no value; on the
   tests' 16x16 patch world a 4x4 trigger is only partly inside the mask at 0.5 and the AUROC of triggered
   against clean inputs is 0.62 at 0.5, 0.99 at 0.25, 1.0 at 0.2 with 9% of the clean regions fooling).
2. Fooled count: the region m * x pasted on ``n_targets`` clean images t (m * x + (1 - m) * t); the share of those
   not already predicted y that now are.
3. Inert pattern: the same region filled with uniform noise instead (m * u + (1 - m) * t); AvgConf = the mean
   over the targets of the model's top softmax confidence. A trigger fools many targets while the noise in its
   place does not make the model confident; a benign salient region fools few.
4. Decision boundary from clean inputs: their (AvgConf, fooled) points are put in ``bins`` equal-count bins of
   AvgConf, the highest fooled share of each bin is taken and a quadratic is fitted through those maxima by least
   squares (the paper's curve fitted to the per-interval maxima). Score = fooled - curve(AvgConf) (the vertical
   distance above the curve; the paper uses the distance to the curve). Threshold: the (1 - ``fpr``) quantile of
   the clean inputs' scores (the paper thresholds the distance without naming a value; documented choice).

What differs from the paper: the paper proposes several classes per input by segmentation and subtracts
their Grad-CAM masks; here the predicted class's mask alone is used (BackdoorBench does the same). Targets
that are already predicted y are left out of the fooled share. Defaults scaled to a CPU: 32 targets (the paper:
100), 10 bins. The targets, the clean calibration inputs and the boundary are drawn/fitted once per
(model, clean) pair and reused while the same two objects are scanned again (``input_filter``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor, model_device
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.rng import generator


def images(x, detector: str, what: str) -> torch.Tensor:
    """x (images or a Dataset) as a float tensor (n, c, h, w), or a DataError naming the detector."""
    x = x.x if isinstance(x, Dataset) else as_tensor(x)
    if x.dim() != 4:
        raise DataError(f"{detector} needs images (n, c, h, w) for {what}; got shape {tuple(x.shape)}")
    return x.float()


def conv_layer(model: nn.Module, layer: str | None) -> nn.Module:
    """The module named layer, or the last nn.Conv2d of model; a ConfigError when there is none."""
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            raise ConfigError(f"layer='{layer}' is not a module of the model; accepted: one of "
                              f"{', '.join(n for n in modules if n)}")
        return modules[layer]
    convs = [m for m in modules.values() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("SentiNet's Grad-CAM needs a convolutional layer; the model has no nn.Conv2d"
                          " (accepted: a model with one, or layer=<a module with a (n, c, h, w) output>)")
    return convs[-1]


def grad_cam(model: nn.Module, module: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (n, h, w) of labels on x at module's output, upsampled to x's size, each divided by its max."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            acts = seen[-1]
            grads, = torch.autograd.grad(logits.gather(1, labels.view(-1, 1)).sum(), acts)
    finally:
        handle.remove()
    if acts.dim() != 4:
        raise ConfigError(f"Grad-CAM needs a layer with (n, c, h, w) outputs; got shape {tuple(acts.shape)}")
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return cam / top.view(-1, 1, 1)


def fit_boundary(conf: np.ndarray, fooled: np.ndarray, bins: int) -> np.ndarray:
    """Coefficients (highest power first) of the quadratic through the highest fooled share of each of bins
    equal-count bins of conf (fewer coefficients when there are fewer than 3 distinct bins)."""
    order = np.argsort(conf, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    xs = np.array([conf[g].mean() for g in groups])
    ys = np.array([fooled[g].max() for g in groups])
    return np.polyfit(xs, ys, min(2, len(np.unique(xs)) - 1))


@DETECTORS.register("sentinet", reference="Chou, Tramer & Pellegrino, SentiNet: Detecting Localized Universal "
                                           "Attacks Against Deep Learning Systems, IEEE S&P Workshops 2020")
class SentiNet:
    """Grad-CAM region pasted on clean images: fooled share vs inert-pattern confidence, above a clean-fitted curve."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, n_targets: int = 32, mask_threshold: float = 0.25, bins: int = 10, fpr: float = 0.05,
                 calibration: int = 200, layer: str | None = None, batch_size: int = 256, seed: int = 0):
        self.n_targets = int(check_range("n_targets", n_targets, 1))
        self.mask_threshold = check_range("mask_threshold", mask_threshold, 0.0, 1.0, low_open=True)
        self.bins = int(check_range("bins", bins, 1))
        self.fpr = check_range("fpr", fpr, 0.0, 1.0, high_open=True)
        self.calibration = int(check_range("calibration", calibration, 2))
        self.layer, self.seed = layer, int(seed)
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self._fitted: tuple | None = None

    def statistics(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(AvgConf of the inert pattern, fooled share) of each input of x (CPU float64 tensors)."""
        module = conv_layer(model, self.layer)
        noise_g = generator(self.seed, "sentinet", "inert")
        confs, fools = [], []
        step = max(1, self.batch_size // self.n_targets)
        with torch.no_grad():
            t_pred = model(targets).argmax(dim=1)
        for i in range(0, len(x), step):
            xb = x[i:i + step]
            with torch.no_grad():
                y = model(xb).argmax(dim=1)
            m = (grad_cam(model, module, xb, y) >= self.mask_threshold).to(xb.dtype).unsqueeze(1).unsqueeze(1)
            noise = torch.rand(xb.shape, generator=noise_g, device="cpu").to(xb.device)
            t = targets.unsqueeze(0)  # (1, T, c, h, w); m (b, 1, 1, h, w)
            with torch.no_grad():
                pasted = m * xb.unsqueeze(1) + (1 - m) * t
                inert = m * noise.unsqueeze(1) + (1 - m) * t
                p_pred = model(pasted.flatten(0, 1)).argmax(dim=1).view(len(xb), -1)
                conf = torch.softmax(model(inert.flatten(0, 1)).double(), dim=1).max(dim=1).values.view(len(xb), -1)
            other = t_pred.unsqueeze(0) != y.unsqueeze(1)
            fooled = ((p_pred == y.unsqueeze(1)) & other).double().sum(dim=1) / other.double().sum(dim=1).clamp_min(1)
            confs.append(conf.mean(dim=1).cpu())
            fools.append(fooled.cpu())
        return torch.cat(confs), torch.cat(fools)

    def fit(self, model: nn.Module, clean) -> dict:
        """{targets, curve, threshold, ...} for (model, clean), computed once per pair of objects."""
        if self._fitted is not None and self._fitted[0] is model and self._fitted[1] is clean:
            return self._fitted[2]
        pool = images(clean, "SentiNet", "the clean held-out set").to(model_device(model))
        if len(pool) < 2:
            raise DataError(f"SentiNet needs at least 2 clean images (targets and calibration); got {len(pool)}")
        order = torch.randperm(len(pool), generator=generator(self.seed, "sentinet", "split"), device="cpu")
        n_t = min(self.n_targets, len(pool) // 2)
        targets = pool[order[:n_t].to(pool.device)]
        calib = pool[order[n_t:n_t + self.calibration].to(pool.device)]
        conf, fooled = self.statistics(model, calib, targets)
        curve = fit_boundary(conf.numpy(), fooled.numpy(), self.bins)
        clean_scores = fooled - torch.from_numpy(np.polyval(curve, conf.numpy()))
        state = {"targets": targets, "curve": curve,
                 "threshold": float(torch.quantile(clean_scores, 1.0 - self.fpr)),
                 "clean_fooled": float(fooled.mean()), "clean_conf": float(conf.mean())}
        self._fitted = (model, clean, state)
        return state

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = fooled share - curve(AvgConf); flagged above the clean inputs' (1 - fpr) quantile."""
        require(self, data=data, model=model, clean=clean)
        x = images(data, "SentiNet", "the scanned inputs").to(model_device(model))
        was_training = model.training
        model.eval()
        try:
            state = self.fit(model, clean)
            if x.shape[1:] != state["targets"].shape[1:]:
                raise DataError(f"inputs have shape {tuple(x.shape[1:])} but clean images "
                                f"{tuple(state['targets'].shape[1:])}")
            conf, fooled = self.statistics(model, x, state["targets"])
        finally:
            model.train(was_training)
        scores = fooled - torch.from_numpy(np.polyval(state["curve"], conf.numpy()))
        return Detection(scores, scores > state["threshold"],
                         {"fooled": fooled.tolist(), "avg_conf": conf.tolist(), "curve": state["curve"].tolist(),
                          "threshold": state["threshold"], "clean_fooled": state["clean_fooled"],
                          "clean_conf": state["clean_conf"]})
