"""ABS (Liu, Lee, Tao, Ma, Aafer & Zhang, "ABS: Scanning Neural Networks for Back-doors by Artificial Brain
Stimulation", ACM CCS 2019).

1. Stimulation analysis: the inner neurons are the channels of the INPUT of ``layer`` (a module name;
   default the last nn.Linear, whose input is the penultimate features: any nn.Module; a conv module's input
   gives channel maps, a channel's value set over its whole map). Each neuron is set, on each of
   ``images`` clean images, to ``levels`` values from 0 to ``max_scale`` times the largest activation the
   layer shows on those images, and the rest of the network runs on. Per image, each label's peak logit over
   the values; the label with the highest peak is the image's, its elevation the gap to the second-highest
   peak. A neuron whose images all have the same label l is a compromised-neuron candidate for l, with
   elevation the smallest gap over the images; the ``candidates`` most elevated are kept.
2. Trigger reverse engineering, per candidate n (all in one batch): a mask m and pattern p (sigmoids) on
   the clean images maximise n's activation and keep the layer's other neurons low,
   loss = -a_n + ``other_weight`` mean_{j != n} a_j + ``size_weight`` relu(|m|_1 - ``max_size`` h w)
   (the paper's mask bound, 6% of the image), Adam (lr ``lr``) for ``steps`` steps.
3. REASR: the share of clean images not of l (other than the reversal's own images) that the stamped
   trigger sends to l.
One score per label: the largest REASR of its candidates (0 without one); flagged at >= ``threshold``
(0.9: ours; the paper reports REASR and calls models with a near-100% REASR trojaned). ``details`` carries
each label's best mask and pattern (``masks``, ``patterns``, like Neural Cleanse, so defend/trigger_unlearning.py
can unlearn an ABS trigger) and the candidates.
Differences from the paper: one layer (the paper scans every convolutional layer), the stimulation values are
sampled on a fixed grid, and the reversal optimises only the neuron terms (the paper's later versions add a
logits term). Defaults scaled to a CPU: 5 images, 9 levels up to 5 times the layer's largest activation,
10 candidates, 600 steps. Checked on the penultimate layer: on the digits cnn's last conv layer the candidates'
reversed triggers stay below 10% REASR (a channel's map mean is not a localised trigger's signature there).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.neural_cleanse import apply_trigger
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor, model_device
from poisonlab.errors import DataError, check_range
from poisonlab.models.feature_layer import feature_module
from poisonlab.rng import generator


@contextmanager
def layer_input(model: nn.Module, layer: str | None, replace=None):
    """Yields a list that each forward appends ``layer``'s raw input to; replace(input) -> input, if given,
    substitutes what the layer receives (the stimulation). The hook is removed afterwards."""
    _, module = feature_module(model, layer)
    seen: list[torch.Tensor] = []

    def hook(_module, args):
        x = args[0] if replace is None else replace(args[0])
        seen.append(x)
        return (x, *args[1:]) if replace is not None else None

    handle = module.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def neuron_activations(inner: torch.Tensor) -> torch.Tensor:
    """(n, channels): a layer input's per-neuron activation (the channel mean for conv maps)."""
    return inner.flatten(2).mean(dim=2) if inner.dim() > 2 else inner


def elevation(logits: torch.Tensor) -> tuple[int, float]:
    """(label, elevation) of one neuron's stimulation, logits (images, levels, labels), as ABS ranks it: per image,
    each label's peak over the stimulation values; the image's label is the one with the highest peak and its
    elevation the gap to the second-highest peak; the neuron's label if every image agrees (else -1) and its
    elevation the smallest over the images (0 where they disagree)."""
    peaks = logits.max(dim=1).values                             # (images, labels)
    top2 = peaks.topk(2, dim=1)
    labels = top2.indices[:, 0]
    if not bool((labels == labels[0]).all()):
        return -1, 0.0
    return int(labels[0]), float((top2.values[:, 0] - top2.values[:, 1]).min())


@DETECTORS.register("abs", reference="Liu et al., ABS: Scanning Neural Networks for Back-doors by Artificial Brain "
                                     "Stimulation, CCS 2019")
class ABS:
    """Stimulate each inner neuron; the candidates driving every image to one label get a reversed trigger; REASR."""

    inspects = "model"
    requires = ("model", "clean")
    reverses_triggers = True   # details carry "masks", "patterns", "flagged_labels" (defend/trigger_unlearning.py)

    def __init__(self, *, layer: str | None = None, images: int = 5, levels: int = 9, max_scale: float = 5.0,
                 candidates: int = 10, steps: int = 600, lr: float = 0.1, max_size: float = 0.06,
                 other_weight: float = 1.0, size_weight: float = 1.0, threshold: float = 0.9, samples: int = 256,
                 seed: int = 0):
        self.layer = layer
        self.images = int(check_range("images", images, 1))
        self.levels = int(check_range("levels", levels, 2))
        self.max_scale = check_range("max_scale", max_scale, 0.0, low_open=True)
        self.candidates = int(check_range("candidates", candidates, 1))
        self.steps = int(check_range("steps", steps, 1))
        self.lr = check_range("lr", lr, 0.0, low_open=True)
        self.max_size = check_range("max_size", max_size, 0.0, 1.0, low_open=True)
        self.other_weight = check_range("other_weight", other_weight, 0.0)
        self.size_weight = check_range("size_weight", size_weight, 0.0)
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)
        self.samples = int(check_range("samples", samples, 1))
        self.seed = int(seed)

    @torch.no_grad()
    def stimulate(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label (neurons,), elevation (neurons,)) of every neuron of the layer on images x (module docstring)."""
        with layer_input(model, self.layer) as seen:
            num_labels = model(x).shape[1]
        base = seen[0]
        top = float(base.max()) * self.max_scale
        values = torch.linspace(0.0, max(top, 1e-6), self.levels, device=x.device)
        reps = x.repeat_interleave(self.levels, dim=0)                       # (images * levels, ...)
        labels, elevations = [], []
        for n in range(base.shape[1]):
            progress.step(f"ABS stimulation: neuron {n + 1}/{base.shape[1]}")

            def set_neuron(inner, n=n):
                inner = inner.clone()
                v = values.repeat(len(x)).view(-1, *([1] * (inner.dim() - 1)))
                inner[:, n] = v.squeeze(1)        # a conv map: the whole channel set to the value
                return inner

            with layer_input(model, self.layer, set_neuron):
                logits = model(reps).view(len(x), self.levels, num_labels)
            label, value = elevation(logits)
            labels.append(label)
            elevations.append(value)
        return torch.tensor(labels, device="cpu"), torch.tensor(elevations, dtype=torch.float64, device="cpu")

    def reverse(self, model: nn.Module, x: torch.Tensor, neurons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(masks (k, 1, h, w), patterns (k, c, h, w)) maximising each neuron's activation under the size bound."""
        k, (c, h, w), dev = len(neurons), x.shape[1:], x.device
        g = generator(self.seed, "abs-reverse")
        m_raw = (0.1 * torch.randn(k, 1, h, w, generator=g, device="cpu")).to(dev).requires_grad_(True)   # about 0.5
        p_raw = (0.1 * torch.randn(k, c, h, w, generator=g, device="cpu")).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([m_raw, p_raw], lr=self.lr)
        bound = self.max_size * h * w
        pick = neurons.to(dev)
        for step in range(self.steps):
            mask, pattern = torch.sigmoid(m_raw), torch.sigmoid(p_raw)
            stamped = apply_trigger(x.unsqueeze(0), mask.unsqueeze(1), pattern.unsqueeze(1)).flatten(0, 1)
            with layer_input(model, self.layer) as seen:
                model(stamped)
            act = neuron_activations(seen[0]).view(k, len(x), -1).mean(dim=1)       # (k, neurons)
            own = act.gather(1, pick[:, None]).squeeze(1)
            others = (act.sum(dim=1) - own) / max(1, act.shape[1] - 1)
            size = torch.relu(mask.flatten(1).sum(dim=1) - bound)
            loss = (-own + self.other_weight * others + self.size_weight * size).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.step(f"ABS trigger reversal: step {step + 1}/{self.steps}")
        return torch.sigmoid(m_raw).detach(), torch.sigmoid(p_raw).detach()

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """One score per label: the largest REASR of its candidate neurons; flagged at >= threshold."""
        require(self, model=model, clean=clean)
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        dev = model_device(frozen)
        x = clean.x if isinstance(clean, Dataset) else as_tensor(clean)
        if x.dim() != 4 or len(x) == 0:
            raise DataError(f"ABS needs clean images (n, c, h, w); got shape {tuple(x.shape)}")
        x = x[torch.randperm(len(x), generator=generator(self.seed, "abs"), device="cpu")[:self.samples].to(x.device)]
        x = x.float().to(dev)
        with torch.no_grad():
            own = frozen(x).argmax(1)
        held_out = torch.arange(len(x), device=dev) >= (self.images if len(x) > self.images else 0)
        labels, elevations = self.stimulate(frozen, x[:self.images])
        num_labels = int(frozen(x[:1]).shape[1])
        order = [int(n) for n in torch.argsort(elevations, descending=True, stable=True) if labels[n] >= 0]
        chosen = torch.tensor(order[:self.candidates], dtype=torch.long, device="cpu")
        scores = torch.zeros(num_labels, dtype=torch.float64, device="cpu")
        (c, h, w) = x.shape[1:]
        masks, patterns = torch.zeros(num_labels, 1, h, w, device="cpu"), torch.zeros(num_labels, c, h, w, device="cpu")
        found = []
        if len(chosen):
            cand_masks, cand_patterns = self.reverse(frozen, x[:self.images], chosen)
            with torch.no_grad():
                for n, mask, pattern in zip(chosen.tolist(), cand_masks, cand_patterns):
                    label = int(labels[n])
                    keep = (own != label) & held_out
                    hit = frozen(apply_trigger(x[keep], mask, pattern)).argmax(1) == label
                    reasr = float(hit.float().mean()) if int(keep.sum()) else 0.0
                    found.append({"neuron": n, "label": label, "elevation": float(elevations[n]), "reasr": reasr})
                    if reasr > scores[label] or not masks[label].any():
                        scores[label] = max(float(scores[label]), reasr)
                        masks[label], patterns[label] = mask.cpu(), pattern.cpu()
        flagged = scores >= self.threshold
        return Detection(scores, flagged, {"candidates": found, "masks": masks, "patterns": patterns,
                                           "mask_l1": masks.flatten(1).sum(dim=1).tolist(),
                                           "max_reasr": float(scores.max()),
                                           "flagged_labels": torch.nonzero(flagged).flatten().tolist()})
