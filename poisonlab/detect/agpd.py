"""AGPD, Activation Gradient based Poisoned sample Detection (Yuan, Wei, Zhang, Liu & Wu, "Activation Gradient based
Poisoned Sample Detection Against Backdoor Attacks", arXiv 2312.06230, ICLR 2025; reference code BackdoorBench's
detection_pretrain/agpd.py and agpd_utils.py).

A backdoored model maps poisoned and clean samples of the target class to similar activations, but the gradients
of the class's logit with respect to those activations point different ways. Each sample of a class is placed on
the gradient circular distribution (GCD) by two angles: to the class's clean basis (the mean activation gradient
of a few clean samples of the class, from the defender's ``validation`` set, correctly classified) and to its
poisoned basis (the class sample whose gradient is least similar to the clean basis).

1. Activation gradients: per sample and per layer in ``layers`` (default: every nn.Conv2d; a model without one:
   every nn.Linear but the head), g = the gradient of the sample's logit of its label with respect to the
   layer's output, averaged over the spatial positions (eval mode; one backward pass gives them all).
2. Target classes: per layer and class, the dispersion gap = ||cos(g_i, clean) - cos(g_i, poison basis)||_2 over
   the class's other samples, divided by sqrt(n_class); per layer, the one-sided MAD anomaly index over classes,
   J = (gap - median) / (1.4826 (MAD + 1e-6)), 0 below the median. If the largest J over layers and classes is
   >= ``anomaly`` (e^2), that layer is used and its classes with J > e^2 are the targets; else, among the three
   layers before the last, the one with the most classes whose gap > ``gap`` (0.3) is used and those classes are
   the targets (the reference looks at the 4th- to 2nd-last of ResNet-18's 16 convolutions); none: not backdoored,
   nothing is flagged.
3. Filtering, per target class: starting from the poisoned basis, each round computes every remaining sample's
   closeness rate = d_p / (d_p + d_c) (cosine distances to the mean gradient of the samples taken so far and to
   the clean basis), min-max normalises it, and takes the samples at <= ``tau`` (0.05); the Jensen-Shannon distance
   between consecutive rounds' rate histograms (99 bins on [0, 1]) is recorded, until every sample is taken. The
   flagged samples are those taken before the start of the ``window`` (10) consecutive rounds with the smallest
   mean + 5 std of the JS distance (the reference's find_small_and_smooth_window_start): the JS value k measures
   the change made by round k + 1, so a window starting at value s flags rounds 0..s (the basis and s rounds).

Score (for ROC curves; the reference reports flags only): a target-class sample scores 2 - its rate against the
final flagged set's mean gradient and the clean basis (in [1, 2]); other samples 0. What differs: a class without a
correctly classified clean sample is not scanned (the reference raises); fewer rounds than ``window`` shrink the
window to the rounds there are (the reference raises); the reference's code flags rounds 0..s-1 (its slice
[:s]), which leaves out the round just before the smooth window (on a class whose poisons all go in round 1 it
flags the basis alone); here rounds 0..s. Defaults: BackdoorBench's (100 clean samples, 10 a class on CIFAR-10; tau 0.05).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.rng import generator

MAD_SCALE = 1.4826
BINS = np.linspace(0.0, 1.0, 100)


def default_layers(model: nn.Module) -> list[str]:
    """Every nn.Conv2d of model, in named_modules order; without one, every nn.Linear but the last (the head)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:-1]
    if not linears:
        raise ConfigError(f"AGPD needs a hidden layer; {type(model).__name__} has no nn.Conv2d and one nn.Linear"
                          f" (accepted: a model with a convolution or two linear layers, or layers=[<module names>])")
    return linears


def activation_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str],
                         batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{layer: (n, channels)} the gradient of each sample's logit of label y w.r.t. the layer's output, averaged over
    its spatial positions (float64, CPU). The model is put in eval mode and restored; its parameters are not changed."""
    modules = dict(model.named_modules())
    device = model_device(model)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        for i in range(0, len(x), batch_size):
            seen: dict[str, torch.Tensor] = {}
            handles = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
                       for name in layers]
            try:
                xb = x[i:i + batch_size].to(device).detach().requires_grad_(True)  # a graph also for a frozen model
                with torch.enable_grad():
                    logits = model(xb)
                    picked = logits.gather(1, y[i:i + batch_size].to(device).view(-1, 1)).sum()
                    missing = [name for name in layers if name not in seen]
                    if missing:
                        raise ConfigError(f"layer '{missing[0]}' was not called in the forward pass; accepted: a module"
                                          f" the model's forward runs")
                    grads = torch.autograd.grad(picked, [seen[name] for name in layers], allow_unused=True)
            finally:
                for h in handles:
                    h.remove()
            for name, g in zip(layers, grads):
                g = torch.zeros_like(seen[name]) if g is None else g
                parts[name].append((g.flatten(2).mean(dim=2) if g.dim() > 2 else g).double().cpu())
    finally:
        model.train(was_training)
    return {name: torch.cat(p).numpy() for name, p in parts.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a with the vector b (0 where a norm is 0)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num((a @ b) / norms)


def dispersion_gap(g: np.ndarray, clean: np.ndarray) -> tuple[float, int]:
    """(gap, basis): basis = the row least similar to clean; gap = ||cos(g_i, clean) - cos(g_i, g_basis)||_2 over the
    other rows, divided by sqrt(n)."""
    to_clean = cosine(g, clean)
    basis = int(np.argmin(to_clean))
    others = np.arange(len(g)) != basis
    diff = to_clean[others] - cosine(g[others], g[basis])
    return float(np.linalg.norm(diff) / math.sqrt(len(g))), basis


def anomaly_index(gaps: np.ndarray) -> np.ndarray:
    """One-sided MAD anomaly index: |gap - median| / 1.4826 / (MAD + 1e-6), 0 below the median."""
    med = np.median(gaps)
    j = np.abs(gaps - med) / MAD_SCALE / (np.median(np.abs(gaps - med)) + 1e-6)
    j[gaps < med] = 0.0
    return j


def closeness_rates(g: np.ndarray, poison_mean: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """d_p / (d_p + d_c) per row: cosine distances to the poisoned mean and to the clean basis (0 = at the poison)."""
    d_p, d_c = 1.0 - cosine(g, poison_mean), 1.0 - cosine(g, clean)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(d_p / (d_p + d_c), nan=0.5)


def best_window_start(js: list[float], window: int) -> int:
    """The start of the `window` consecutive values with the smallest mean + 5 std (population std)."""
    window = max(1, min(window, len(js)))
    scores = [np.mean(js[s:s + window]) + 5 * np.std(js[s:s + window]) for s in range(len(js) - window + 1)]
    return int(np.argmin(scores))


def filter_class(g: np.ndarray, clean: np.ndarray, basis: int, tau: float, window: int) -> tuple[np.ndarray, dict]:
    """Stage 3 in one target class: the mask of rows flagged, and {rounds, start}."""
    taken = np.zeros(len(g), dtype=bool)
    taken[basis] = True
    rounds = [np.array([basis])]
    previous = closeness_rates(g[~taken], g[taken].mean(axis=0), clean)
    js: list[float] = []
    while not taken.all():
        rest = np.nonzero(~taken)[0]
        rates = closeness_rates(g[rest], g[taken].mean(axis=0), clean)
        span = rates.max() - rates.min()
        if span == 0:
            new = rest if rates.min() > tau else rest[rates <= tau]
        else:
            new = rest[(rates - rates.min()) / span <= tau]
        if len(new) == 0:
            break
        current = rates[~np.isin(rest, new)]
        if len(previous) == 0 or len(current) == 0:
            js.append(1.0)
        else:
            js.append(float(jensenshannon(np.histogram(previous, BINS, density=True)[0],
                                          np.histogram(current, BINS, density=True)[0])))
        previous = current
        taken[new] = True
        rounds.append(new)
    start = best_window_start(js, window) if js else 0
    flagged = np.zeros(len(g), dtype=bool)
    flagged[np.concatenate(rounds[:start + 1])] = True   # js[k] measures round k + 1: rounds 0..start come before
    return flagged, {"rounds": len(rounds), "start": start}


@DETECTORS.register("agpd", reference="Yuan, Wei, Zhang, Liu & Wu, Activation Gradient based Poisoned Sample Detection "
                                       "Against Backdoor Attacks, arXiv 2312.06230 (ICLR 2025)")
class Agpd:
    """Gradient circular distribution per class: the target class by its dispersion, its poisons by closeness."""

    inspects = "data"
    requires = ("data", "model", "validation")

    def __init__(self, *, clean_per_class: int = 10, layers: list[str] | None = None, tau: float = 0.05,
                 anomaly: float = math.exp(2), gap: float = 0.3, window: int = 10, batch_size: int = 256,
                 seed: int = 0):
        if layers is not None and (not isinstance(layers, list) or not layers
                                   or not all(isinstance(n, str) for n in layers)):
            raise ConfigError(f"layers={layers!r} is not accepted; accepted: a list of module names, e.g. ['conv1']")
        self.clean_per_class = int(check_range("clean_per_class", clean_per_class, 1))
        self.layers = layers
        self.tau = check_range("tau", tau, 0.0, 1.0)
        self.anomaly = check_range("anomaly", anomaly, 0.0, low_open=True)
        self.gap = check_range("gap", gap, 0.0)
        self.window = int(check_range("window", window, 1))
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.seed = int(seed)

    def _layers(self, model: nn.Module) -> list[str]:
        """The layers to read: the given names (checked) or default_layers."""
        if self.layers is None:
            return default_layers(model)
        names = dict(model.named_modules())
        for name in self.layers:
            if name not in names or not name:
                raise ConfigError(f"layer '{name}' is not a module of {type(model).__name__}; accepted: names from"
                                  f" model.named_modules(), e.g. {', '.join(default_layers(model)[:3])}")
        return list(self.layers)

    def clean_bases(self, model: nn.Module, clean: Dataset, layers: list[str], classes: int) -> dict[int, dict]:
        """{class: {layer: mean gradient}} from at most clean_per_class correctly classified clean samples a class."""
        with torch.no_grad():
            device = model_device(model)
            pred = torch.cat([model(clean.x[i:i + self.batch_size].to(device)).argmax(dim=1).cpu()
                              for i in range(0, len(clean), self.batch_size)])
        right = pred == clean.y.cpu()
        chosen = []
        for c in range(classes):
            idx = torch.nonzero(right & (clean.y.cpu() == c)).flatten()
            order = torch.randperm(len(idx), generator=generator(self.seed, "agpd", "clean", c), device="cpu")
            chosen.append(idx[order[:self.clean_per_class]])
        rows = torch.cat(chosen)
        grads = activation_gradients(model, clean.x[rows], clean.y[rows], layers, self.batch_size)
        labels = clean.y.cpu()[rows].numpy()
        return {c: {name: grads[name][labels == c].mean(axis=0) for name in layers}
                for c in range(classes) if (labels == c).any()}

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean=None,
             validation: Dataset | None = None, sources=None) -> Detection:
        """Flag the poisons of the target class(es) found by their gradients' dispersion; score as the docstring."""
        require(self, data=data, model=model, validation=validation)
        layers = self._layers(model)
        bases = self.clean_bases(model, validation, layers, data.num_classes)
        progress.step(f"activation gradients of {len(data)} samples at {len(layers)} layers")
        grads = activation_gradients(model, data.x, data.y, layers, self.batch_size)
        y = data.y.cpu().numpy()
        classes = [c for c in sorted(bases) if (y == c).sum() >= 2]
        gaps = np.zeros((len(layers), len(classes)))
        basis = np.zeros((len(layers), len(classes)), dtype=int)
        for li, name in enumerate(layers):
            for ci, c in enumerate(classes):
                gaps[li, ci], basis[li, ci] = dispersion_gap(grads[name][y == c], bases[c][name])
        layer, targets = self.targets(gaps)
        scores, flagged = np.zeros(len(data)), np.zeros(len(data), dtype=bool)
        per_class = {}
        for ci in targets:
            c, idx, name = classes[ci], np.nonzero(y == classes[ci])[0], layers[layer]
            mask, info = filter_class(grads[name][idx], bases[c][name], int(basis[layer, ci]), self.tau, self.window)
            flagged[idx[mask]] = True
            ref = grads[name][idx[mask]].mean(axis=0) if mask.any() else grads[name][idx[basis[layer, ci]]]
            scores[idx] = 2.0 - closeness_rates(grads[name][idx], ref, bases[c][name])
            per_class[c] = {**info, "flagged": int(mask.sum()), "gap": float(gaps[layer, ci])}
        details = {"layer": None if layer is None else layers[layer], "targets": [classes[ci] for ci in targets],
                   "per_class": per_class, "unscanned": sorted(set(range(data.num_classes)) - set(classes))}
        return Detection(torch.from_numpy(scores), torch.from_numpy(flagged), details)

    def targets(self, gaps: np.ndarray) -> tuple[int | None, list[int]]:
        """(layer index, target class indices) from the dispersion gaps (layers x classes), as the docstring's stage 2."""
        if gaps.shape[1] == 0:
            return None, []
        j = np.stack([anomaly_index(row) for row in gaps])
        if j.max() >= self.anomaly:
            layer = int(np.argmax(j.max(axis=1)))
            return layer, [int(c) for c in np.nonzero(j[layer] > self.anomaly)[0]]
        window = list(range(max(0, len(gaps) - 4), len(gaps) - 1)) or [len(gaps) - 1]
        counts = [int((gaps[li] > self.gap).sum()) for li in window]
        if max(counts) == 0:
            return None, []
        layer = window[int(np.argmax(counts))]
        return layer, [int(c) for c in np.nonzero(gaps[layer] > self.gap)[0]]
