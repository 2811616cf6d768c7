"""Evaluation metrics: accuracy, per-class accuracy, confusion, attack success, flips, detection.

All take predicted and true labels as int64 tensors; nothing here trains or draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of predictions equal to the labels (nan for an empty set)."""
    return float((pred == y).float().mean()) if len(y) else float("nan")


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; row = true class, column = predicted class."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class (diagonal of the confusion matrix / row sums); nan where a class is absent."""
    cm = confusion_matrix(pred, y, num_classes).double()
    return cm.diagonal() / cm.sum(dim=1)


def attack_success_rate(pred_triggered: torch.Tensor, y_true: torch.Tensor, target: int | Sequence[int]) -> float:
    """ASR: among triggered inputs whose class is attacked, the fraction predicted as their class's target.

    target: one class (all-to-one: every input whose true class is not the target counts), or a target
    map (map[c] = target of class c, -1 = not attacked; poison/targets.py) for all-to-all and
    per-source backdoors.
    """
    if isinstance(target, int):
        keep = y_true != target
        return accuracy(pred_triggered[keep], torch.full_like(y_true[keep], target))
    wanted = torch.as_tensor(list(target), dtype=torch.long, device=y_true.device)[y_true.long()]
    keep = (wanted >= 0) & (wanted != y_true)
    return accuracy(pred_triggered[keep], wanted[keep])


def flip_count(pred: torch.Tensor, y: torch.Tensor, source: int, target: int) -> int:
    """Number of inputs of true class source predicted as target (e.g. 7 -> 1)."""
    return int(((y == source) & (pred == target)).sum())


@dataclass(frozen=True)
class DetectionScores:
    """Detection quality against ground truth; rates are nan where undefined."""

    tp: int
    fp: int
    tn: int
    fn: int
    tpr: float
    fpr: float
    precision: float
    recall: float
    f1: float
    auroc: float

    def as_dict(self) -> dict:
        return asdict(self)


def detection_scores(flagged: torch.Tensor, truth: torch.Tensor, scores: torch.Tensor | None = None) -> DetectionScores:
    """TPR, FPR, precision, recall, F1 of a boolean flag vector; AUROC of scores (higher = more suspicious)."""
    flagged = torch.as_tensor(flagged, dtype=torch.bool, device="cpu").flatten()  # scored on the host
    truth = torch.as_tensor(truth, dtype=torch.bool, device="cpu").flatten()
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    fn = int((~flagged & truth).sum())
    tn = int((~flagged & ~truth).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return DetectionScores(tp, fp, tn, fn, recall, ratio(fp, fp + tn), precision, recall, f1,
                           auroc(scores, truth) if scores is not None else float("nan"))


def _ordered(scores) -> np.ndarray:
    """Scores as finite float64 in the same order with the same ties: +-inf as the largest finite floats,
    NaN below everything (scikit-learn refuses non-finite scores; the ROC depends only on the order).
    """
    from scipy.stats import rankdata  # here, not at the top: a run without detection needs no scipy

    s = np.nan_to_num(torch.as_tensor(scores, dtype=torch.float64, device="cpu").flatten().numpy(), nan=-np.inf)
    return s if np.isfinite(s).all() else rankdata(s)


def auroc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Area under the ROC curve (scikit-learn's roc_auc_score; a tie counts 1/2); nan if one class is absent."""
    from sklearn.metrics import roc_auc_score  # imported when used: scikit-learn takes ~0.7 s to import

    t = torch.as_tensor(truth, dtype=torch.bool, device="cpu").flatten().numpy()
    if t.all() or not t.any():
        return float("nan")
    return float(roc_auc_score(t, _ordered(scores)))


def roc_curve(scores: torch.Tensor, truth) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve from (0, 0), one point per distinct score (flag score >= t; higher = more
    suspicious); scikit-learn's roc_curve keeping every point. A rate whose class is absent stays 0."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    t = torch.as_tensor(truth, dtype=torch.bool, device="cpu").flatten().numpy()
    if t.size == 0:
        return np.zeros(1), np.zeros(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, _ = sklearn_roc_curve(t, _ordered(scores), pos_label=True, drop_intermediate=False)
    return np.nan_to_num(fpr, nan=0.0), np.nan_to_num(tpr, nan=0.0)
