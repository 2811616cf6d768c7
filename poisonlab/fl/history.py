"""Per-round records of a federation: who took part, who attacked, who was flagged, how the model did.

``RoundRecord.to_dict()`` is the JSON shape of one entry of metrics.json's "history" (NaN -> null).
Everything except ``seconds`` is deterministic: the same config and seed give identical records.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from poisonlab.metrics import detection_scores


def _clean(value):
    """float NaN/Inf -> None, recursively, so the record is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


@dataclass
class RoundRecord:
    """One round. Ids are client ids (not row positions); accuracy fields are None in rounds not evaluated.

    selected: clients whose update the aggregator kept; flagged: clients it flagged (the complement of
    selected unless the rule reports its own flags in info["flagged"]); precision/recall: of the flags
    against the truly malicious clients of the round (None where undefined); applied: False when the
    aggregate was non-finite and the global model was kept; flips: {"s->t": count} when configured.
    """

    round: int
    sampled: list[int]
    malicious: list[int]
    selected: list[int]
    flagged: list[int]
    update_norms: list[float]
    precision: float | None = None
    recall: float | None = None
    clean_accuracy: float | None = None
    loss: float | None = None
    attack_success_rate: float | None = None
    flips: dict = field(default_factory=dict)
    applied: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """A JSON-able dict (metrics.json history entry)."""
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RoundRecord:
        """Inverse of to_dict (None stays None)."""
        return cls(**data)


def flag_quality(flagged: torch.Tensor, malicious: torch.Tensor) -> tuple[float | None, float | None]:
    """(precision, recall) of the boolean flags against the truth; None where undefined."""
    s = detection_scores(flagged, malicious)
    return (s.precision if math.isfinite(s.precision) else None, s.recall if math.isfinite(s.recall) else None)
