"""Input filtering: an input detector guards a model at inference and its flags are the inputs refused.

An input detector (STRIP, Gao et al. ACSAC 2019, by default; any registered detector that inspects
inputs, named by ``detector: {name, params}``) is fitted with the defender's clean set (its boundary
at a clean false-rejection rate) and scans every batch handed to the deployed model;
``Defended.reject`` is its flags. The model itself is unchanged (a frozen copy is deployed).
"""

from __future__ import annotations

import copy

import torch

from poisonlab.defend.base import Defended, require
from poisonlab.defend.detector_spec import build_detector
from poisonlab.defend.registry import DEFENSES


@DEFENSES.register("input_filter", reference="Gao et al., STRIP: A Defence Against Trojan Attacks on DNNs, "
                                              "ACSAC 2019 (reject the inputs an input detector flags)")
class InputFilter:
    """Reject at inference the inputs an input detector, fitted on the clean set, flags."""

    stage = "inference"
    requires = ("model", "clean")

    def __init__(self, *, detector: dict | str = "strip"):
        self.detector_name, self.detector_params, self.detector = build_detector(detector, "inputs")

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """A frozen copy of model with reject(x) = the detector's flags on x."""
        require(self, model=model, clean=clean)
        guarded = copy.deepcopy(model).eval().requires_grad_(False)

        def reject(x: torch.Tensor) -> torch.Tensor:
            return self.detector.scan(data=x, model=guarded, clean=clean).flagged

        return Defended(guarded, reject=reject, details={"detector": self.detector_name})
