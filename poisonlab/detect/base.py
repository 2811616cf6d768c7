"""The Detection type every detector returns, and its one shared evaluation against ground truth.

A detector's ``scan(...)`` returns ``Detection(scores, flagged, details)``: one score per
scanned item (sample, input, label, source or probe; higher = more suspicious), the items
it flags, and a small dict of what it found (per-class statistics, thresholds, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.metrics import DetectionScores, detection_scores


@dataclass(frozen=True)
class Detection:
    """scores (float, (n,), higher = more suspicious), flagged (bool, (n,)), details (dict)."""

    scores: torch.Tensor
    flagged: torch.Tensor
    details: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        scores = torch.as_tensor(self.scores).detach().to(torch.float64).flatten()
        flagged = torch.as_tensor(self.flagged).detach().to(torch.bool).flatten()
        if scores.shape != flagged.shape:
            raise DataError(f"detection has {scores.numel()} scores but {flagged.numel()} flags; they must match")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "flagged", flagged)

    def __len__(self) -> int:
        return int(self.scores.numel())

    @property
    def num_flagged(self) -> int:
        """How many items are flagged."""
        return int(self.flagged.sum())


def _truth(truth, n: int) -> torch.Tensor:
    """Ground truth as a bool tensor of length n, or a DataError naming the mismatch."""
    t = torch.as_tensor(np.asarray(truth) if not isinstance(truth, torch.Tensor) else truth).to(torch.bool).flatten()
    if t.numel() != n:
        raise DataError(f"truth mask has {t.numel()} entries but the detection has {n}; they must match")
    return t


def evaluate_detection(detection: Detection, truth) -> DetectionScores:
    """TPR, FPR, precision, recall, F1 of the flags and AUROC of the scores against the truth mask."""
    return detection_scores(detection.flagged, _truth(truth, len(detection)), detection.scores)


def roc_curve(scores: torch.Tensor, truth) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) arrays of the ROC curve, one point per distinct score threshold (flag score >= t)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten().numpy()
    t = _truth(truth, s.size).numpy()
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1] if s.size else np.array([], dtype=int)
    tp = np.cumsum(t)[last]
    fp = np.cumsum(~t)[last]
    n_pos, n_neg = max(int(t.sum()), 1), max(int((~t).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def tpr_at_fpr(scores: torch.Tensor, truth, max_fpr: float = 0.05) -> tuple[float, float]:
    """The ROC operating point with the highest TPR whose FPR is <= max_fpr: (tpr, fpr)."""
    check_range("max_fpr", max_fpr, 0.0, 1.0)
    fpr, tpr = roc_curve(scores, truth)
    ok = fpr <= max_fpr + 1e-12
    best = int(np.argmax(np.where(ok, tpr, -1.0)))
    return float(tpr[best]), float(fpr[best])


def flag_top_fraction(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the ceil(fraction * n) highest scores (ties broken by position)."""
    check_range("fraction", fraction, 0.0, 1.0)
    n = scores.numel()
    k = min(n, int(np.ceil(fraction * n - 1e-9)))
    flagged = torch.zeros(n, dtype=torch.bool)
    if k > 0:
        flagged[torch.topk(scores, k).indices] = True
    return flagged


def detection_record(name: str, detection: Detection, truth=None) -> dict:
    """One metrics.json "detections" entry: scores, flags, truth and the evaluation figures."""
    record = {"detector": name, "scores": detection.scores.tolist(), "flagged": detection.flagged.tolist()}
    if truth is None:
        record.update(truth=None, tpr=None, fpr=None, precision=None, recall=None, f1=None, auroc=None)
        return record
    t = _truth(truth, len(detection))
    ev = evaluate_detection(detection, t)
    record.update(truth=t.tolist(), tpr=ev.tpr, fpr=ev.fpr, precision=ev.precision, recall=ev.recall,
                  f1=ev.f1, auroc=ev.auroc)
    return record


def check_labels(y: torch.Tensor, n: int, what: str = "labels") -> torch.Tensor:
    """Labels as int64 of length n, or a ConfigError naming the mismatch."""
    y = torch.as_tensor(y).long().flatten()
    if y.numel() != n:
        raise ConfigError(f"{what} has {y.numel()} entries but there are {n} samples; they must match")
    return y
