"""TABOR (Guo, Wang, Xing, Du & Song, "TABOR: A Highly Accurate Approach to Inspecting and Restoring Trojan
Backdoors in AI Systems", IEEE ICDM 2019 / arXiv:1908.01763).

Neural Cleanse's per-label trigger reversal (detect/neural_cleanse.py: x' = (1 - m) x + m p, CE to the
label plus an adaptively weighted |m|_1) with TABOR's regularisers added to every step's loss, for each
label t (weights ``weights`` = (mask elastic, pattern elastic, mask smoothness, pattern smoothness,
blocking, overlaying), TrojanZoo's defaults (1e-6, 1e-5, 1e-7, 1e-8, 0, 1e-2)):

- R1, overly large triggers: elastic net |m|_1 + |m|_2^2 and |(1 - m) p|_1 + |(1 - m) p|_2^2 (no pattern
  outside the mask);
- R2, scattered triggers: total variation s(v) = sum of squared differences of neighbouring pixels, of m
  and of (1 - m) p;
- R3, blocking triggers: CE(f((1 - m) x), y): the image with the trigger's region cut out keeps its class
  (y = the model's own prediction on the clean x: the defender's clean set needs no labels here);
- R4, overlaying triggers: CE(f(m p), t): the trigger alone, on a black image, is classified t.

The anomaly decision is the paper's trigger-quality metric (Sec. 4, "Detection"), per label
A_t = log(|F_t|_1 / (h w)) + log(s(F_t) / (2 h w - h - w)) - log(acc_att) - log(acc_crop)
with acc_att the share of stamped clean images classified t, acc_crop the share of clean images with the
trigger's region cut out that keep their class (each at least 1/n so the log stays finite), followed by
Neural Cleanse's MAD test: anomaly index (median - A) / (1.4826 MAD) > ``threshold`` (2) flags the label.
Differences from the paper: F_t is the mask m (the trigger's footprint, so a dark pattern is not
mistaken for a small trigger; the paper's F is the restored trigger), and the optional explanation-based
pruning of false trigger pixels and its acc_exp term are left out. Steps and samples are Neural Cleanse's
CPU-sized defaults.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from poisonlab.detect.neural_cleanse import NeuralCleanse, apply_trigger
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import ConfigError

DEFAULT_WEIGHTS = (1e-6, 1e-5, 1e-7, 1e-8, 0.0, 1e-2)


def total_variation(v: torch.Tensor) -> torch.Tensor:
    """s(v) per leading index: sum of squared differences of vertically and horizontally adjacent pixels."""
    rows = (v[..., 1:, :] - v[..., :-1, :]).pow(2).flatten(1).sum(dim=1)
    cols = (v[..., :, 1:] - v[..., :, :-1]).pow(2).flatten(1).sum(dim=1)
    return rows + cols


def elastic(v: torch.Tensor) -> torch.Tensor:
    """|v|_1 + |v|_2^2 per leading index."""
    return v.abs().flatten(1).sum(dim=1) + v.pow(2).flatten(1).sum(dim=1)


def trigger_quality(l1: torch.Tensor, tv: torch.Tensor, acc_att: torch.Tensor, acc_crop: torch.Tensor,
                    h: int, w: int, floor: float) -> torch.Tensor:
    """TABOR's A = log(l1 / hw) + log(tv / (2hw - h - w)) - log(acc_att) - log(acc_crop); low = a likely trigger.

    Every argument is clamped below at floor (accuracies at 1/n) so that the logarithms stay finite."""
    pairs = max(1, 2 * h * w - h - w)
    return (torch.log(l1.double().clamp_min(floor) / (h * w)) + torch.log(tv.double().clamp_min(floor) / pairs)
            - torch.log(acc_att.double().clamp_min(floor)) - torch.log(acc_crop.double().clamp_min(floor)))


@DETECTORS.register("tabor", reference="Guo et al., TABOR: A Highly Accurate Approach to Inspecting and Restoring "
                                       "Trojan Backdoors in AI Systems, ICDM 2019")
class Tabor(NeuralCleanse):
    """Neural Cleanse's reversal plus TABOR's four regularisers; MAD test on the trigger-quality metric."""

    def __init__(self, *, weights=DEFAULT_WEIGHTS, steps: int = 800, batch_size: int = 32, lr: float = 0.1,
                 init_cost: float = 1e-3, success: float = 0.99, patience: int = 10, threshold: float = 2.0,
                 samples: int = 512, seed: int = 0):
        super().__init__(steps=steps, batch_size=batch_size, lr=lr, init_cost=init_cost, success=success,
                         patience=patience, threshold=threshold, samples=samples, seed=seed)
        weights = tuple(weights) if isinstance(weights, (list, tuple)) else weights
        if (not isinstance(weights, tuple) or len(weights) != 6
                or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in weights)):
            raise ConfigError(f"weights={weights!r} is not accepted; accepted: six finite numbers >= 0 (mask elastic,"
                              " pattern elastic, mask smoothness, pattern smoothness, blocking, overlaying)")
        self.weights = tuple(float(v) for v in weights)

    def regulariser(self, model: nn.Module, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor):
        """lambda . (R1 mask, R1 pattern, R2 mask, R2 pattern, R3 blocking, R4 overlaying), per label (L,)."""
        w_m1, w_p1, w_m2, w_p2, w_block, w_over = self.weights
        outside = (1.0 - mask) * pattern
        loss = w_m1 * elastic(mask) + w_p1 * elastic(outside) + w_m2 * total_variation(mask)
        loss = loss + w_p2 * total_variation(outside)
        L = len(mask)
        if w_block > 0:
            with torch.no_grad():
                own = model(x).argmax(1).repeat(L)
            cut = model(((1.0 - mask).unsqueeze(1) * x.unsqueeze(0)).flatten(0, 1))
            loss = loss + w_block * nn.functional.cross_entropy(cut, own, reduction="none").view(L, -1).mean(dim=1)
        if w_over > 0:
            alone = model(mask * pattern)
            loss = loss + w_over * nn.functional.cross_entropy(alone, torch.arange(L, device=alone.device),
                                                               reduction="none")
        return loss

    @torch.no_grad()
    def statistic(self, model: nn.Module, x: torch.Tensor, masks: torch.Tensor, patterns: torch.Tensor,
                  norms: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """TABOR's trigger-quality metric A per label (module docstring) and its parts."""
        model = copy.deepcopy(model).eval()   # the caller's model keeps its mode
        own = model(x).argmax(1)
        acc_att, acc_crop = [], []
        for t in range(len(masks)):
            acc_att.append((model(apply_trigger(x, masks[t], patterns[t])).argmax(1) == t).float().mean())
            acc_crop.append((model((1.0 - masks[t]) * x).argmax(1) == own).float().mean())
        acc_att, acc_crop = torch.stack(acc_att), torch.stack(acc_crop)
        tv = total_variation(masks)
        h, w = masks.shape[-2:]
        quality = trigger_quality(norms, tv, acc_att.clamp_min(1.0 / len(x)), acc_crop.clamp_min(1.0 / len(x)),
                                  h, w, floor=1e-12)
        return quality, {"quality": quality.cpu().tolist(), "acc_att": acc_att.cpu().tolist(),
                         "acc_crop": acc_crop.cpu().tolist(), "mask_tv": tv.cpu().tolist()}
