"""Spectral signatures (Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018).

Per class c with representations R_c (n_c, d) (the input of ``feature_layer``, default the last nn.Linear): centre them, M = R_c - mean(R_c); take the top
right singular vector v of M; the score of sample i is tau_i = ((r_i - mean) . v)^2. The
poisoned samples, if any, have the largest scores: the paper removes the top 1.5 * epsilon
fraction of each class, epsilon being an upper bound on the poisoned fraction of a class.

poisonlab extension (``orient=True``, not in the paper). The paper assumes the poison is a
minority of its class. An all-to-one backdoor at 10% of the training set makes the target class
about half poison; then the centred projections are two symmetric modes and tau cannot tell them
apart. With orient=True: (1) a class is scanned only if its spectral signature strength
mean(tau) = sigma_1^2 / n_c is an outlier among classes (signed MAD index > ``class_index``,
as in Neural Cleanse); (2) in a scanned class the signed projection is oriented towards the mode
whose raw inputs lie nearer to other classes (dirty-label poison is relabeled from them), split by
1-D 2-means; the far mode is flagged. Score = class index + oriented projection / rms.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, flag_top_fraction, require
from poisonlab.detect.features import poisoned_side, representations
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import check_range
from poisonlab.rng import generator
from poisonlab.stats import anomaly_index


def spectral_scores(reps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, p): squared and signed projections of the centred rows of reps on their top right singular vector."""
    centred = reps.double() - reps.double().mean(dim=0, keepdim=True)
    if centred.shape[0] < 2:
        zero = torch.zeros(centred.shape[0], dtype=torch.float64, device=centred.device)
        return zero, zero
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    p = centred @ vh[0]
    return p ** 2, p


def split_1d(p: torch.Tensor, iters: int = 50) -> float:
    """The threshold between the two centres of a 1-D 2-means (Lloyd) started at min and max."""
    lo, hi = float(p.min()), float(p.max())
    for _ in range(iters):
        t = (lo + hi) / 2
        left, right = p[p <= t], p[p > t]
        if len(left) == 0 or len(right) == 0:
            break
        lo, hi = float(left.mean()), float(right.mean())
    return (lo + hi) / 2


@DETECTORS.register("spectral_signatures",
                    reference="Tran, Li & Madry, Spectral Signatures in Backdoor Attacks, NeurIPS 2018")
class SpectralSignatures:
    """Per class, squared projection on the top singular vector of centred representations; flag top 1.5*eps."""

    inspects = "data"
    requires = ("data",)

    def __init__(self, *, epsilon: float = 0.1, multiplier: float = 1.5, classes: list[int] | None = None,
                 orient: bool = False, class_index: float = 2.0, feature_layer: str | None = None, seed: int = 0):
        self.epsilon = check_range("epsilon", epsilon, 0.0, 1.0)
        self.multiplier = check_range("multiplier", multiplier, 0.0)
        self.classes, self.orient = classes, bool(orient)
        self.class_index, self.seed = check_range("class_index", class_index, 0.0), int(seed)
        self.feature_layer = feature_layer  # module whose input is the features; None: the last nn.Linear

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score every sample of data (labels as given) on model embeddings (raw inputs if model is None).

        Paper mode: scores are tau divided by their class's mean (sigma_1^2 / n_c) so classes are
        comparable for a global ROC; this keeps the ranking inside a class, hence the flags.
        """
        require(self, data=data)
        reps = representations(data.x, model, self.feature_layer)
        classes = [c for c in (range(data.num_classes) if self.classes is None else self.classes)
                   if int((data.y == int(c)).sum()) > 1]
        index = {int(c): torch.nonzero(data.y == int(c)).flatten() for c in classes}
        proj = {c: spectral_scores(reps[i]) for c, i in index.items()}
        if self.orient:
            return self._oriented(data, index, proj)
        scores = torch.zeros(len(data), dtype=torch.float64, device=reps.device)
        flagged = torch.zeros(len(data), dtype=torch.bool, device=reps.device)
        fraction = min(1.0, self.multiplier * self.epsilon)
        per_class = {}
        for c, idx in index.items():
            tau = proj[c][0]
            mean = float(tau.mean())
            scores[idx] = tau / mean if mean > 0 else tau
            flagged[idx[flag_top_fraction(tau, fraction)]] = True
            per_class[c] = {"n": len(idx), "mean_tau": mean, "flagged": int(flagged[idx].sum())}
        return Detection(scores, flagged, {"per_class": per_class, "fraction_removed": fraction})

    def _oriented(self, data: Dataset, index: dict, proj: dict) -> Detection:
        """The orient=True extension: class outlier test on mean tau, then the oriented far mode."""
        strength = torch.tensor([float(proj[c][0].mean()) for c in index], dtype=torch.float64, device="cpu")
        class_idx = anomaly_index(strength) * -1.0  # large mean tau -> positive index
        scores = torch.zeros(len(data), dtype=torch.float64, device=data.x.device)
        flagged = torch.zeros(len(data), dtype=torch.bool, device=data.x.device)
        per_class = {}
        for k, (c, idx) in enumerate(index.items()):
            p = proj[c][1]
            side = p > split_1d(p)
            if not poisoned_side(data.x, data.y, idx, side, c, generator(self.seed, "spectral", c)):
                p, side = -p, ~side
            rms = float(p.pow(2).mean().sqrt()) or 1.0
            scores[idx] = float(class_idx[k]) + p / rms
            suspicious = bool(class_idx[k] > self.class_index)
            if suspicious:
                flagged[idx[side]] = True
            per_class[c] = {"n": len(idx), "mean_tau": float(strength[k]), "class_index": float(class_idx[k]),
                            "suspicious": suspicious, "flagged": int(flagged[idx].sum())}
        return Detection(scores, flagged, {"per_class": per_class})
