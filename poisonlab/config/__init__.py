"""Experiment configuration: the sections (each defined once and used both as a part of the YAML document
and as the runtime config: train.py, local.py, schedule.py, injection.py, adversary.py, federation.py),
the document's schema, YAML loading with overrides, and component checks."""

from poisonlab.config.load import apply_overrides, load_config, parse, read_yaml
from poisonlab.config.schema import ExperimentConfig

__all__ = ["ExperimentConfig", "apply_overrides", "load_config", "parse", "read_yaml"]
