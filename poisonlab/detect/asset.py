"""ASSET, Active Separation via Offset (Pan, Zeng, Lyu, Lin & Jia, "ASSET: Robust Backdoor Data Detection Across a
Multiplicity of Deep Learning Paradigms", USENIX Security 2023; reference code github.com/ruoxi-jia-group/ASSET,
ASSET_demo.ipynb and new_poi_util.py, ported to BackdoorBench as detection_pretrain/asset.py).

Passive detectors read a model trained on the poisoned set, where poisons and clean samples may look alike. ASSET
instead trains a model so that they behave differently: it minimises a loss on the defender's small clean base set
and maximises (offsets) it on the part of the poisoned set that does not look like the base set. Clean samples of
the poisoned set follow the base set, poisons do not, so after the offset their losses separate.

For every mini-batch B of the poisoned set (``rounds`` passes, ``batch_size`` rows, a seeded order):

1. Base step: a batch of the base set (``validation``) lowers the mean over its rows of the variance of the
   logits, Var_c f(x)_c (the offset model's outputs on clean data become flat).
2. Selection: a fresh MLP v (features -> 1 hidden -> 1 hidden -> sigmoid, ``hidden`` units) is trained for
   ``vnet_steps`` alternating Adam steps to output 1 on B and 0 on the base batch (mean squared error) on the
   given (backdoored) model's last spatial feature map, flattened (``selector_features``; the penultimate
   features for a model without one); B's rows whose score v(x) has an adjusted outlyingness
   (Hubert & Van der Veeken 2008: a skewness-adjusted boxplot with the medcouple) above ``outlyingness`` (2) are
   the ones unlike the base set.
3. Offset step: the cross-entropy of the selected rows is maximised (its negative is minimised; skipped when at
   most one row is selected, as BackdoorBench does).

The offset model is a fresh copy of the given model's architecture (re-initialised from the seed, as the reference
trains a new ResNet-18); both steps use Adam at ``lr`` (1e-4), one optimiser each, as the reference does.
A sample's score is its cross-entropy under the offset model. The split (the reference's ``get_t``): a Gaussian
is fitted to the lower half of the scores (those <= the median, the mostly-clean half; one Gaussian component
is its mean and variance, plus sklearn's 1e-6 regularisation) and the samples scoring above t are flagged, t the
point right of the mean where the fitted density falls to ``eps`` (1e-6):
t = mu + sigma sqrt(-2 ln(eps sigma sqrt(2 pi))) (``split="density"``, the default). The reference code writes
t = mu + sigma sqrt(-2 ln(eps) sigma sqrt(2 pi)) (the sigma sqrt(2 pi) outside the logarithm, so t does not scale
with the scores); ``split="reference"`` reproduces it.

Defaults are BackdoorBench's config (batch 256, one round, Adam 1e-4, outlyingness 2, eps 1e-6; the reference
demo: batch 512, eps 1e-6). What differs: the feature map v reads comes from the given model in eval mode (the
reference runs its layers in train mode), and the selection statistic is computed on the CPU. Measured: on the
pooled penultimate features of a ResNet-8 the selector found almost no poison (a global average pool drops where
the patch is) and the poisons' losses ended below the clean ones (AUROC 0.18); docs/detection.md has the figures.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.beatrix import activations, last_feature_map
from poisonlab.detect.features import embed
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import host, model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.models.build import init_parameters
from poisonlab.rng import generator

SPLITS = ("density", "reference")
REG_COVAR = 1e-6  # sklearn GaussianMixture's default regularisation, added to the fitted variance


def medcouple(x: np.ndarray) -> float:
    """The medcouple of x (Brys, Hubert & Struyf 2004): the median over x_i <= m <= x_j of
    h = ((x_j - m) - (m - x_i)) / (x_j - x_i), m the median; pairs of values tied at m get -1 / 0 / +1 by
    their position (above / on / below the anti-diagonal of the tie block), as the definition's special kernel."""
    z = np.sort(np.asarray(x, dtype=np.float64))[::-1]
    z = z - np.median(z)
    upper, lower = z[z >= 0], z[z <= 0]               # both in decreasing order; ties at 0 end upper, start lower
    width = upper[:, None] - lower[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        h = (upper[:, None] + lower[None, :]) / width
    ties = int((lower == 0).sum())
    if ties:
        a, b = np.meshgrid(np.arange(ties), np.arange(ties), indexing="ij")
        h[len(upper) - ties:, :ties] = np.sign(a + b + 1 - ties)
    return float(np.median(h))


def adjusted_outlyingness(s: np.ndarray) -> np.ndarray:
    """Per value: (s - med) / (w2 - med) above the median, (med - s) / (med - w1) below, w1 and w2 the adjusted
    boxplot's fences (Hubert & Vandervieren 2008): q1 - 1.5 e^(-4 MC) IQR and q3 + 1.5 e^(3 MC) IQR for MC > 0,
    q1 - 1.5 e^(-3 MC) IQR and q3 + 1.5 e^(4 MC) IQR otherwise (quartiles linearly interpolated). 0/0 is 0."""
    s = np.asarray(s, dtype=np.float64)
    med = float(np.median(s))
    q1, q3 = np.quantile(s, [0.25, 0.75])
    mc, iqr = medcouple(s), q3 - q1
    lo, hi = (-4.0, 3.0) if mc > 0 else (-3.0, 4.0)
    w1, w2 = q1 - 1.5 * math.exp(lo * mc) * iqr, q3 + 1.5 * math.exp(hi * mc) * iqr
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s > med, (s - med) / (w2 - med), (med - s) / (med - w1))
    return np.nan_to_num(out, nan=0.0, posinf=np.inf)


def split_threshold(scores: np.ndarray, eps: float, split: str = "density") -> float:
    """The reference's get_t: one Gaussian fitted to the scores <= their median (lower interpolation); the point
    right of its mean where its density is eps (``density``), or the reference code's expression (``reference``)."""
    scores = np.asarray(scores, dtype=np.float64)
    lower = scores[scores <= np.quantile(scores, 0.5, method="lower")]
    mu, sigma = float(lower.mean()), math.sqrt(float(lower.var()) + REG_COVAR)
    if split == "reference":
        return mu + sigma * math.sqrt(-2.0 * math.log(eps) * sigma * math.sqrt(2.0 * math.pi))
    return mu + sigma * math.sqrt(max(0.0, -2.0 * math.log(eps * sigma * math.sqrt(2.0 * math.pi))))


def fresh_copy(model: nn.Module, seed: int, *keys: object) -> nn.Module:
    """A trainable copy of model's architecture with new weights: Linear and convolution layers re-drawn from
    generator(seed, *keys) (torch's default init), normalisation layers reset; the caller's model is untouched."""
    fresh = copy.deepcopy(model).requires_grad_(True)
    init_parameters(fresh, generator(seed, *keys))
    for module in fresh.modules():
        if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            module.reset_parameters()
    return fresh


class Selector(nn.Module):
    """The reference's Vnet: features -> hidden -> hidden (ReLU) -> 1 (sigmoid)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(f)).flatten()


@DETECTORS.register("asset", reference="Pan, Zeng, Lyu, Lin & Jia, ASSET: Robust Backdoor Data Detection Across a "
                                        "Multiplicity of Deep Learning Paradigms, USENIX Security 2023")
class Asset:
    """Offset training (loss down on the clean base set, up on rows unlike it); flag the losses above the split.

    A sample's score is its loss under the offset model; the threshold is the lower half's Gaussian at density eps."""

    inspects = "data"
    requires = ("data", "model", "validation")

    def __init__(self, *, rounds: int = 1, batch_size: int = 256, lr: float = 1e-4, vnet_steps: int = 100,
                 vnet_lr: float = 1e-4, hidden: int = 128, outlyingness: float = 2.0, eps: float = 1e-6,
                 split: str = "density", feature_layer: str | None = None, seed: int = 0):
        if split not in SPLITS:
            raise ConfigError(f"split='{split}' is not known; accepted: {', '.join(SPLITS)}")
        self.rounds = int(check_range("rounds", rounds, 1))
        self.batch_size = int(check_range("batch_size", batch_size, 2))
        self.lr = check_range("lr", lr, 0.0, low_open=True)
        self.vnet_steps = int(check_range("vnet_steps", vnet_steps, 1))
        self.vnet_lr = check_range("vnet_lr", vnet_lr, 0.0, low_open=True)
        self.hidden = int(check_range("hidden", hidden, 1))
        self.outlyingness = check_range("outlyingness", outlyingness, 0.0)
        self.eps = check_range("eps", eps, 0.0, 1.0, low_open=True, high_open=True)
        self.split, self.feature_layer, self.seed = split, feature_layer, int(seed)

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean=None,
             validation: Dataset | None = None, sources=None) -> Detection:
        """Score every sample of data by its cross-entropy under the offset model; flag above the split."""
        require(self, data=data, model=model, validation=validation)
        if len(validation) < 2 or len(data) < 2:
            raise ConfigError(f"ASSET needs at least 2 rows of data and of the clean base set (validation);"
                              f" got {len(data)} and {len(validation)}")
        device = model_device(model)
        feats = self.selector_features(model, data.x).to(device)
        base_feats = self.selector_features(model, validation.x).to(device)
        offset = fresh_copy(model, self.seed, "asset", "offset").to(device)
        selected = self.offset_training(offset, data, validation, feats, base_feats)
        scores = self.losses(offset, data)
        t = split_threshold(scores.numpy(), self.eps, self.split)
        return Detection(scores, scores > t, {"threshold": t, "selected_per_batch": selected})

    def selector_features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What the selector reads (float32, CPU): the input of ``feature_layer`` when given; else the model's last
        spatial feature map flattened (the reference's ``children[:-1] + Flatten`` of its ResNet-18: layer4's
        512x4x4 map, before pooling, where a patch still has a place); else (no spatial map) the penultimate
        features. Eval mode, restored afterwards."""
        if self.feature_layer is not None:
            return embed(model, x, feature_layer=self.feature_layer).float().cpu()
        was_training = model.training
        model.eval()
        try:
            try:
                module = last_feature_map(model, x[:1].to(model_device(model)))
            except ConfigError:
                return embed(model, x).float().cpu()
            return activations(model, module, x.to(model_device(model))).flatten(1).float()
        finally:
            model.train(was_training)

    def offset_training(self, offset: nn.Module, data: Dataset, base: Dataset, feats: torch.Tensor,
                        base_feats: torch.Tensor) -> list[int]:
        """The reference's loop; returns how many rows the selection offset in each batch."""
        device = model_device(offset)
        opt_min = torch.optim.Adam(offset.parameters(), lr=self.lr)
        opt_max = torch.optim.Adam(offset.parameters(), lr=self.lr)
        offset.train()
        selected, batches = [], math.ceil(len(data) / self.batch_size)
        for r in range(self.rounds):
            order = torch.randperm(len(data), generator=generator(self.seed, "asset", "order", r), device="cpu")
            for b in range(batches):
                progress.step(f"round {r + 1}/{self.rounds}, batch {b + 1}/{batches}")
                rows = order[b * self.batch_size:(b + 1) * self.batch_size]          # CPU indices, moved per use
                pick = torch.randperm(len(base), generator=generator(self.seed, "asset", "base", r, b), device="cpu")
                base_rows = pick[:min(self.batch_size, len(base))]
                flat = offset(base.x[base_rows.to(base.x.device)].to(device)).var(dim=1).mean()
                opt_min.zero_grad(set_to_none=True)
                flat.backward()
                opt_min.step()
                unlike = self.unlike_base(feats[rows.to(feats.device)], base_feats[base_rows.to(feats.device)], (r, b))
                selected.append(int(unlike.sum()))
                if selected[-1] <= 1:
                    continue
                chosen = rows[unlike]
                x, y = data.x[chosen.to(data.x.device)].to(device), data.y[chosen.to(data.y.device)].to(device)
                ascent = -nn.functional.cross_entropy(offset(x), y)
                opt_max.zero_grad(set_to_none=True)
                ascent.backward()
                opt_max.step()
        return selected

    def unlike_base(self, batch: torch.Tensor, base: torch.Tensor, key: tuple) -> torch.Tensor:
        """Mask of the batch rows whose selector score has an adjusted outlyingness above the cut (on the CPU)."""
        with host():  # built and initialised on the CPU from the seed, then moved to the features' device
            vnet = Selector(batch.shape[1], self.hidden)
            init_parameters(vnet, generator(self.seed, "asset", "vnet", *key))
        vnet = vnet.to(batch.device)
        opt_pos = torch.optim.Adam(vnet.parameters(), lr=self.vnet_lr)
        opt_neg = torch.optim.Adam(vnet.parameters(), lr=self.vnet_lr)
        ones = torch.ones(len(batch), device=batch.device)
        zeros = torch.zeros(len(base), device=batch.device)
        for _ in range(self.vnet_steps):
            for opt, f, target in ((opt_pos, batch, ones), (opt_neg, base, zeros)):
                loss = nn.functional.mse_loss(vnet(f), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            score = vnet(batch).double().cpu().numpy()
        return torch.from_numpy(adjusted_outlyingness(score) > self.outlyingness)

    @torch.no_grad()
    def losses(self, offset: nn.Module, data: Dataset) -> torch.Tensor:
        """Per-sample cross-entropy of data under the offset model in eval mode (float64, CPU)."""
        device = model_device(offset)
        offset.eval()
        parts = [nn.functional.cross_entropy(offset(data.x[i:i + 512].to(device)), data.y[i:i + 512].to(device),
                                             reduction="none") for i in range(0, len(data), 512)]
        return torch.cat(parts).double().cpu()
