"""What every detector is (the Detector protocol), the Detection it returns, and its one shared
evaluation against ground truth.

A detector is a class registered in ``detect.registry.DETECTORS``; its constructor takes
keyword-only parameters and stores them; ``inspects`` says what one score is about; one
keyword-only ``scan(*, data=None, model=None, clean=None, validation=None, sources=None)`` returns
``Detection(scores, flagged, details)``: one score per scanned item (higher = more suspicious), the
items it flags, and a small dict of what it found (per-class statistics, thresholds, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from poisonlab.device import as_tensor
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.detect.registry import DETECTORS
from poisonlab.metrics import DetectionScores, detection_scores, roc_curve

INSPECTS = {
    "data": "one score per training sample",
    "sources": "one score per training sample, shared by the samples of a source",
    "inputs": "one score per input at inference time",
    "model": "one score per label of a trained model",
    "probes": "one score per probe record",
}
INPUTS = {
    "data": "data to scan",
    "model": "a model",
    "clean": "held-out clean data",
    "validation": "validation data (held-out, clean)",
    "sources": "sources (one source id per sample)",
}


@dataclass(frozen=True)
class Detection:
    """scores (float, (n,), higher = more suspicious), flagged (bool, (n,)), details (dict)."""

    scores: torch.Tensor
    flagged: torch.Tensor
    details: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        scores = as_tensor(self.scores).detach().to("cpu", torch.float64).flatten()  # a Detection lives on the host
        flagged = as_tensor(self.flagged).detach().to("cpu", torch.bool).flatten()
        if scores.shape != flagged.shape:
            raise DataError(f"detection has {scores.numel()} scores but {flagged.numel()} flags; they must match")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "flagged", flagged)

    def __len__(self) -> int:
        return int(self.scores.numel())

    def _repr_html_(self) -> str:
        """Jupyter: items scored and flagged as a table, the score histogram (poisonlab.notebook)."""
        from poisonlab.notebook import detection_html

        return detection_html(self)

    @property
    def num_flagged(self) -> int:
        """How many items are flagged."""
        return int(self.flagged.sum())


@runtime_checkable
class Detector(Protocol):
    """A detector: ``inspects`` (a key of INSPECTS), ``requires`` (the scan keywords it cannot do
    without, keys of INPUTS) and one keyword-only ``scan``; keywords it does not use are ignored."""

    inspects: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]

    def scan(self, *, data: Any = None, model: Any = None, clean: Any = None, validation: Any = None,
             sources: Any = None) -> Detection:
        """Score the items this detector inspects; higher = more suspicious."""
        ...


def check_inputs(name: str, requires: tuple[str, ...], given: dict, how: dict | None = None) -> None:
    """ConfigError naming the detector and the first required scan input that is None.

    how: what the caller should pass for each input (e.g. a command-line flag); default ``scan(key=...)``.
    """
    for key in requires:
        if given.get(key) is None:
            hint = (how or {}).get(key, f"scan({key}=...)")
            raise ConfigError(f"detector '{name}' needs {INPUTS[key]}; pass {hint}")


def require(detector: Detector, **given) -> None:
    """check_inputs for a detector's own scan: its registered name, its ``requires``, the inputs it got."""
    name = next((e.name for e in DETECTORS.entries() if e.factory is type(detector)), type(detector).__name__)
    check_inputs(name, detector.requires, given)


def _truth(truth, n: int) -> torch.Tensor:
    """Ground truth as a bool tensor of length n, or a DataError naming the mismatch."""
    t = as_tensor(np.asarray(truth) if not isinstance(truth, torch.Tensor) else truth).to("cpu", torch.bool).flatten()
    if t.numel() != n:
        raise DataError(f"truth mask has {t.numel()} entries but the detection has {n}; they must match")
    return t


def evaluate_detection(detection: Detection, truth) -> DetectionScores:
    """TPR, FPR, precision, recall, F1 of the flags and AUROC of the scores against the truth mask."""
    return detection_scores(detection.flagged, _truth(truth, len(detection)), detection.scores)


def tpr_at_fpr(scores: torch.Tensor, truth, max_fpr: float = 0.05) -> tuple[float, float]:
    """The ROC operating point with the highest TPR whose FPR is <= max_fpr: (tpr, fpr)."""
    check_range("max_fpr", max_fpr, 0.0, 1.0)
    fpr, tpr = roc_curve(scores, _truth(truth, as_tensor(scores).numel()))
    ok = fpr <= max_fpr + 1e-12
    best = int(np.argmax(np.where(ok, tpr, -1.0)))
    return float(tpr[best]), float(fpr[best])


def flag_top_fraction(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the ceil(fraction * n) highest scores (ties broken by position)."""
    check_range("fraction", fraction, 0.0, 1.0)
    n = scores.numel()
    k = min(n, int(np.ceil(fraction * n - 1e-9)))
    flagged = torch.zeros(n, dtype=torch.bool, device=scores.device)
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
