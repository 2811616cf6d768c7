"""Canary records: a fixed set of probe inputs with expected labels, checked between model versions.

A model version passes when every probe is predicted as expected; comparing two versions
reports every probe whose prediction changed. As a detector, ``scan(model=..., clean=None)``
gives one score per probe: 1 - p(expected label) under the model (higher = more suspicious);
a probe is flagged when it is mispredicted or its prediction differs from that of ``clean``, the
earlier model version trusted as clean (the reference).
(Canaries as integrity tripwires: e.g. Carlini et al., "The Secret Sharer", USENIX Security 2019,
use inserted records to measure memorisation; here they watch for behaviour changes.)
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor
from poisonlab.errors import DataError
from poisonlab.training import predict_logits


@DETECTORS.register("canary", reference="canary / probe records between model versions (cf. Carlini et al. 2019)")
class Canary:
    """Fixed probe records with expected labels; reports every mispredicted or changed probe between versions.

    Probe records x with expected labels y (and optional ids); scan a model version against them.
    """

    inspects = "probes"
    requires = ("model",)

    def __init__(self, *, x, y, ids: list[str] | None = None):
        self.x, self.y = as_tensor(x).float(), as_tensor(y).long().flatten()
        if len(self.x) != len(self.y) or len(self.y) == 0:
            raise DataError(f"canary needs as many expected labels as probes (>0); got {len(self.x)} probes,"
                            f" {len(self.y)} labels")
        self.ids = [str(i) for i in (ids if ids is not None else range(len(self.y)))]
        if len(self.ids) != len(self.y):
            raise DataError(f"canary has {len(self.ids)} ids for {len(self.y)} probes; they must match")

    def scan(self, *, data=None, model: nn.Module | None = None, clean: nn.Module | None = None, validation=None,
             sources=None) -> Detection:
        """Score each probe by 1 - p(expected); flag mispredicted probes and those whose prediction changed
        from clean's (the earlier model version trusted as clean; optional)."""
        require(self, model=model)
        reference = clean
        probs = torch.softmax(predict_logits(model, self.x).double(), dim=1)
        pred = probs.argmax(dim=1)
        flagged = pred != self.y
        before = predict_logits(reference, self.x).argmax(dim=1) if reference is not None else None
        if before is not None:
            flagged |= pred != before
        changes = [{"id": self.ids[i], "expected": int(self.y[i]), "predicted": int(pred[i]),
                    "before": None if before is None else int(before[i])}
                   for i in torch.nonzero(flagged).flatten().tolist()]
        return Detection(1.0 - probs[torch.arange(len(self.y), device=probs.device), self.y], flagged,
                         {"changes": changes, "passed": not changes})
