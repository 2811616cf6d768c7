"""The ``detector: {name, params}`` parameter of the defenses that wrap a detector (filter_retrain,
input_filter): checked when the defense is built, so a bad name or parameter is one ConfigError naming it."""

from __future__ import annotations

from typing import Any

import poisonlab.detect  # noqa: F401  (registers every detector)
from poisonlab.detect.registry import DETECTORS
from poisonlab.detect.run import inspecting
from poisonlab.errors import ConfigError


def build_detector(spec: Any, inspects: str) -> tuple[str, dict, Any]:
    """(name, params, detector) for spec = {"name": ..., "params": {...}} or a bare name,
    refusing a detector that does not inspect ``inspects``."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or set(spec) - {"name", "params"}:
        raise ConfigError(f"detector={spec!r} is not accepted; accepted: {{name: <a detector>, params: {{...}}}}")
    name, params = spec["name"], dict(spec.get("params") or {})
    factory = DETECTORS.entry(name).factory
    if getattr(factory, "inspects", None) != inspects:
        raise ConfigError(f"detector '{name}' inspects {getattr(factory, 'inspects', None)}; accepted here: a detector"
                          f" that inspects {inspects} ({', '.join(inspecting([inspects]))})")
    return name, params, DETECTORS.get(name, **params)
