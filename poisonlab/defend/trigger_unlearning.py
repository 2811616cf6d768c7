"""Model inspection, then unlearning of the reversed trigger (Wang et al., "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019, Sec. VI-C "Patching DNN via Unlearning").

A model-inspection detector that reverse-engineers triggers (``detector: {name, params}``: Neural Cleanse
by default, or TABOR, detect/tabor.py, ABS, detect/abs_stimulation.py) judges the model. Flagged labels: the
reversed trigger (mask, pattern) of the label with the largest anomaly index is stamped on a ``share``
(the paper's 20%) of the defender's clean set, which keeps its TRUE labels, and a copy of the model is
fine-tuned on it (``epochs``, ``lr``: the paper trains one epoch; detect/mitigation.py's ``unlearn``).
No label flagged: the model is judged clean and returned unchanged (a frozen copy), and details say so.
``details`` carries the verdict: flagged labels, the detector's score per label (Neural Cleanse and TABOR: the
anomaly index; ABS: the REASR), the label unlearned.
"""

from __future__ import annotations

import copy

from poisonlab.defend.base import Defended, require
from poisonlab.defend.detector_spec import build_detector
from poisonlab.defend.registry import DEFENSES
from poisonlab.detect.mitigation import unlearn
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.training import TrainConfig


@DEFENSES.register("trigger_unlearning",
                   reference="Wang et al., Neural Cleanse: Identifying and Mitigating Backdoor Attacks in NNs, "
                             "S&P 2019 (Sec. VI-C unlearning the reversed trigger)")
class TriggerUnlearning:
    """Inspect the model (Neural Cleanse, TABOR, ABS); if a label is flagged, unlearn its reversed trigger."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, detector: dict | str = "neural_cleanse", share: float = 0.2, epochs: int = 1,
                 lr: float = 0.01, batch_size: int = 32):
        self.detector_name, self.detector_params, self.detector = build_detector(detector, "model")
        if not getattr(type(self.detector), "reverses_triggers", False):
            raise ConfigError(f"detector '{self.detector_name}' does not reverse-engineer triggers; accepted here: "
                              "neural_cleanse, tabor, abs")
        self.share = check_range("share", share, 0.0, 1.0, low_open=True)
        self.epochs = int(check_range("epochs", epochs, 1, 1000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1))

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The unlearned copy (or, judged clean, a frozen copy); details: the verdict."""
        require(self, model=model, clean=clean)
        found = self.detector.scan(model=model, clean=clean)
        flagged = found.details["flagged_labels"]
        verdict = {"detector": self.detector_name, "flagged_labels": flagged,
                   "label_scores": found.scores.tolist(), "backdoored": bool(flagged)}
        if not flagged:
            return Defended(copy.deepcopy(model).eval().requires_grad_(False),
                            details={**verdict, "unlearned_label": None, "note": "judged clean: model unchanged"})
        label = max(flagged, key=lambda t: float(found.scores[t]))
        dev = model_device(model)
        mask, pattern = found.details["masks"][label].to(dev), found.details["patterns"][label].to(dev)
        cfg = TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
        repaired = unlearn(model, clean, mask, pattern, share=self.share, cfg=cfg, seed=seed)
        return Defended(repaired, details={**verdict, "unlearned_label": label,
                                           "trigger_l1": float(found.details["mask_l1"][label])})
