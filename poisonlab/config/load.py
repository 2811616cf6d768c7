"""Reading an experiment: YAML file -> overrides (--set a.b=v) -> ExperimentConfig, with one-line errors.

Every rejection names the key path, the bad value and what is accepted, e.g.
``federated.rouns: unknown key; did you mean 'rounds'?`` or
``federated.aggregator.name: aggregator 'krumm' is not known; did you mean 'krum'? ...``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from poisonlab.config.base import fields_at, is_union_tag, most_specific
from poisonlab.config.schema import ExperimentConfig
from poisonlab.errors import ConfigError, did_you_mean


def read_yaml(path: str | Path) -> dict:
    """The YAML mapping in path (safe loader only); a ConfigError for unreadable or non-mapping files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys; found {type(doc).__name__}")
    return doc


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    """A copy of doc with each 'a.b.c=value' set (value parsed as YAML: 3, 0.1, [1,2], {name: krum})."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set '{item}' must look like key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value '{raw}' is not valid YAML") from None
        set_path(doc, key.strip(), value)
    return doc


def set_path(doc: dict, dotted: str, value: Any) -> None:
    """Set doc[a][b][c] = value for 'a.b.c', creating mappings on the way; list items by index."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"key path '{dotted}' is empty")
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(node, part, parts[: i + 1])]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"key path '{dotted}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, parts)] = value
    else:
        node[last] = value


def _index(node: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"key path '{'.'.join(path)}': '{part}' is not an index of a list of {len(node)}")
    return int(part)


def parse(doc: dict) -> ExperimentConfig:
    """Validate a mapping into an ExperimentConfig, or raise a one-line ConfigError."""
    try:
        return ExperimentConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(describe_error(most_specific(err.errors()), doc)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override, validate and check component names of an experiment file."""
    from poisonlab.config.validate import check_components

    config = parse(apply_overrides(read_yaml(path), overrides or []))
    check_components(config)
    return config


def describe_error(error: dict, doc: dict) -> str:
    """One line for a pydantic error: key path, bad value, what is accepted."""
    loc = [str(p) for p in error["loc"] if not is_union_tag(p)]
    path = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        fields = fields_at(ExperimentConfig, error["loc"][:-1])
        return f"{path}: unknown key;{did_you_mean(loc[-1], fields)} accepted: {', '.join(sorted(fields))}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}={shown}: {message}"
