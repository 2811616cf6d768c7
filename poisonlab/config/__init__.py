"""Experiment configuration: the schema, YAML loading with overrides, component checks."""

from poisonlab.config.load import apply_overrides, load_config, parse, read_yaml
from poisonlab.config.schema import ExperimentConfig

__all__ = ["ExperimentConfig", "apply_overrides", "load_config", "parse", "read_yaml"]
