"""Scoring a defended model the way BackdoorBench does (Wu et al., "BackdoorBench", NeurIPS 2022 D&B).

- clean accuracy (C-Acc): accuracy on the clean test set;
- attack success rate (ASR): among triggered test inputs whose class is attacked, the share
  predicted as their target;
- robust accuracy (RA): among the same triggered inputs, the share predicted as their TRUE class
  (the backdoor removed and the input still recognised);
- defense effectiveness rating (DER, BackdoorBench Sec. 4.1):
  DER = [max(0, ASR_before - ASR_after) - max(0, ACC_before - ACC_after) + 1] / 2, in [0, 1];
  0.5 = no change, 1 = the ASR removed at no cost in accuracy.

An input a defense rejects at inference (``Defended.reject``) is not classified: it is wrong for
clean accuracy and robust accuracy and not a success for the attack; the rejected shares are
reported beside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import Defended
from poisonlab.training import predict

REJECTED = -1
"""The prediction recorded for an input the defense rejects."""


@dataclass(frozen=True)
class BackdoorScores:
    """Clean accuracy, ASR, robust accuracy (None without a trigger) and the rejected shares of a model."""

    clean_accuracy: float
    attack_success_rate: float | None
    robust_accuracy: float | None
    rejected_clean: float = 0.0
    rejected_triggered: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def guarded_predict(defended: Defended, x: torch.Tensor) -> torch.Tensor:
    """The defended model's predictions on x, REJECTED where its reject function refuses the input."""
    pred = predict(defended.model, x).cpu()
    if defended.reject is not None and len(x):
        refused = torch.as_tensor(defended.reject(x)).to("cpu", torch.bool).flatten()
        if refused.shape != pred.shape:
            raise ValueError(f"reject returned {refused.numel()} flags for {len(x)} inputs")
        pred = torch.where(refused, torch.full_like(pred, REJECTED), pred)
    return pred


def attacked_mask(y: torch.Tensor, target) -> torch.Tensor:
    """Which triggered inputs count for the ASR and RA: those whose class is attacked and not its own target."""
    if isinstance(target, int):
        return y != target
    wanted = torch.as_tensor(list(target), dtype=torch.long)[y.long()]
    return (wanted >= 0) & (wanted != y)


def wanted_labels(y: torch.Tensor, target) -> torch.Tensor:
    """Each triggered input's target label."""
    if isinstance(target, int):
        return torch.full_like(y, target)
    return torch.as_tensor(list(target), dtype=torch.long)[y.long()]


def backdoor_scores(defended: Defended, test: Dataset, triggered: Dataset | None = None, target=None,
                    true_labels: bool = True) -> BackdoorScores:
    """Score defended on the clean test set and (when given) the triggered test set with its target
    (one class or a target map, poison/targets.py). true_labels: False when the triggered set's labels
    are placeholders (edge-case photos), which leaves robust accuracy undefined (None)."""
    pred = guarded_predict(defended, test.x)
    y = test.y.cpu()
    clean_acc = float((pred == y).float().mean()) if len(y) else float("nan")
    rejected_clean = float((pred == REJECTED).float().mean()) if len(y) else 0.0
    if triggered is None or len(triggered) == 0 or target is None:
        return BackdoorScores(clean_acc, None, None, rejected_clean, None)
    ty = triggered.y.cpu()
    keep = attacked_mask(ty, target)
    tpred = guarded_predict(defended, triggered.x)[keep]
    ty = ty[keep]
    if len(ty) == 0:
        return BackdoorScores(clean_acc, None, None, rejected_clean, None)
    asr = float((tpred == wanted_labels(ty, target)).float().mean())
    ra = float((tpred == ty).float().mean()) if true_labels else None
    return BackdoorScores(clean_acc, asr, ra, rejected_clean, float((tpred == REJECTED).float().mean()))


def der(before: BackdoorScores, after: BackdoorScores) -> float | None:
    """BackdoorBench's defense effectiveness rating, [max(0, dASR) - max(0, dACC) + 1] / 2 (None without an ASR)."""
    if before.attack_success_rate is None or after.attack_success_rate is None:
        return None
    d_asr = before.attack_success_rate - after.attack_success_rate
    d_acc = before.clean_accuracy - after.clean_accuracy
    return (max(0.0, d_asr) - max(0.0, d_acc) + 1.0) / 2.0
