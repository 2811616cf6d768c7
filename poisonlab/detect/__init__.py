"""Detecting poisoned data and backdoored models.

Every detector is a class registered in ``DETECTORS`` (detect/registry.py) and built with
``get(name, **params)``. It follows the ``Detector`` protocol (detect/base.py): ``inspects`` says
what one score is about ("data": a training sample; "sources": a training sample, scored by its
source; "inputs": a test input; "model": a label of a trained model; "probes": a probe record),
``requires`` names the scan inputs it cannot do without, and one keyword-only
``scan(*, data=None, model=None, clean=None, validation=None, sources=None)`` returns a
:class:`Detection` (scores, flagged, details), higher score = more suspicious.

``evaluate_detection(detection, truth)`` gives TPR, FPR, precision, recall, F1 and AUROC;
``detect.run`` runs a named detector for ``poisonlab run`` and ``poisonlab scan`` alike.
"""

from poisonlab.detect.registry import DETECTORS
from poisonlab.detect.base import Detection, Detector, evaluate_detection
from poisonlab.detect import (  # noqa: F401  (each member registers its detector)
    abs_stimulation, activation_clustering, agpd, anomaly, asset, beatrix, canary, cognitive_distillation,
    deep_inspect, neo, neural_cleanse, neural_cleanse_filter, neuron_inspect, provenance, roni, scan, sentinet,
    spectral, spectre, strip, tabor, teco)


def get(name: str, **params):
    """Build the detector registered under name with params (a ConfigError names bad ones)."""
    return DETECTORS.get(name, **params)


__all__ = ["DETECTORS", "Detection", "Detector", "evaluate_detection", "get"]
