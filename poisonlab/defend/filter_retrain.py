"""Filter and retrain: a poisoned-sample detector cleans the training set, a fresh model is trained on the rest.

The protocol of Tran, Li & Madry ("Spectral Signatures in Backdoor Attacks", NeurIPS 2018) and Chen et
al. (activation clustering, 2018), also SPECTRE's (Hayase et al., ICML 2021): train a model on the
(poisoned) data, scan the data with its representations, remove the flagged samples, train a fresh
model from scratch on what is left. The detector is any registered detector that inspects data,
named by ``detector: {name, params}`` (default: spectre); it gets the defender's clean set as its
validation set.

Cost: two trainings. In an experiment the model handed to ``defend`` IS build() trained on the data
with train_cfg, so it is the one scanned (``scan_model="given"``, the default, one training saved);
``scan_model="train"`` trains a fresh scout with build() and train_cfg as the papers do.
"""

from __future__ import annotations

import torch

from poisonlab.defend.base import Defended, require
from poisonlab.defend.detector_spec import build_detector
from poisonlab.defend.registry import DEFENSES
from poisonlab.errors import ConfigError
from poisonlab.training import train

SCAN_MODELS = ("given", "train")


@DEFENSES.register("filter_retrain", reference="Tran, Li & Madry, Spectral Signatures in Backdoor Attacks, "
                                                "NeurIPS 2018 (remove the flagged samples, retrain)")
class FilterRetrain:
    """Scan the training data with a data detector, drop the flagged samples, train a fresh model on the rest."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, detector: dict | str = "spectre", scan_model: str = "given"):
        if scan_model not in SCAN_MODELS:
            raise ConfigError(f"scan_model='{scan_model}' is not known; accepted: {', '.join(SCAN_MODELS)}")
        self.detector_name, self.detector_params, self.detector = build_detector(detector, "data")
        self.scan_model = scan_model

    def defend(self, *, model=None, data=None, clean=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """The fresh model trained without the flagged samples; details: how many were removed."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        scout = model
        if scout is None or self.scan_model == "train":
            scout = build()
            train(scout, data, train_cfg, seed=seed)
        flagged = self.detector.scan(data=data, model=scout, validation=clean).flagged.to(data.y.device)
        if bool(flagged.all()):
            raise ConfigError(f"detector '{self.detector_name}' flagged every training sample; nothing is left to"
                              " train on (accepted: detector params that flag fewer)")
        fresh = build()
        train(fresh, data.subset(torch.nonzero(~flagged).flatten()), train_cfg, seed=seed)
        return Defended(fresh, details={"detector": self.detector_name, "removed": int(flagged.sum()),
                                        "removed_share": float(flagged.double().mean())})
