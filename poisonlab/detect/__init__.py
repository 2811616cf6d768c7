"""Detecting poisoned data and backdoored models.

Every detector is registered in ``DETECTORS`` and built with ``get(name, **params)``; its
``scan(...)`` returns a :class:`Detection` (scores, flagged, details), higher score = more
suspicious. What ``scan`` takes depends on what the detector inspects:

- data detectors (activation_clustering, spectral_signatures, anomaly, roni, provenance):
  ``scan(data, model=None, ...)`` -> one score per training sample;
- input detector (strip): ``scan(x, model, clean)`` at inference time -> one score per input;
- model detector (neural_cleanse): ``scan(model, clean)`` -> one score per label;
- canary: ``scan(model, reference=None)`` -> one score per probe record.

``evaluate_detection(detection, truth)`` gives TPR, FPR, precision, recall, F1 and AUROC.
"""

from poisonlab.registry import Registry

DETECTORS = Registry("detector")


def get(name: str, **params):
    """Build the detector registered under name with params (a ConfigError names bad ones)."""
    return DETECTORS.get(name, **params)


from poisonlab.detect.base import Detection, evaluate_detection  # noqa: E402
from poisonlab.detect import (  # noqa: E402,F401  (registers every detector)
    activation_clustering, anomaly, canary, neural_cleanse, provenance, roni, spectral, strip)

__all__ = ["DETECTORS", "Detection", "evaluate_detection", "get"]
