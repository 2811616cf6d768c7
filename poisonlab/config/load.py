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

from poisonlab.config.base import RANGE_ERRORS, fields_at, interval, is_union_tag, most_specific
from poisonlab.config.schema import ExperimentConfig
from poisonlab.config.yaml_limits import check_document, load_bounded, short
from poisonlab.errors import ConfigError, did_you_mean

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB; the largest shipped config is a few KiB)."""


def read_yaml(path: str | Path) -> dict:
    """The YAML mapping in path (a bounded safe loader, yaml_limits.py); a ConfigError for a missing,
    unreadable, oversized, empty or non-mapping file."""
    text = read_config_text(Path(path))
    try:
        doc = load_bounded(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    except ConfigError as err:
        raise ConfigError(f"config file '{path}': {err}") from None
    if doc is None:
        raise ConfigError(f"config file '{path}' is empty (or only comments); accepted: a mapping of keys,"
                          " e.g. 'name: my-run' (see configs/)")
    if not isinstance(doc, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys; found {type(doc).__name__}")
    return doc


def read_config_text(path: Path) -> str:
    """The text of a config file, refusing directories, devices, files over MAX_CONFIG_BYTES and bad UTF-8."""
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory; accepted: a YAML file")
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' is not a regular file; accepted: a YAML file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file '{path}' is {size} bytes; accepted: at most {MAX_CONFIG_BYTES} bytes")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read ({err.strerror or err})") from None


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    """A copy of doc with each 'a.b.c=value' set (value parsed as YAML: 3, 0.1, [1,2], {name: krum})."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set '{item}' must look like key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = load_bounded(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {short(key)}: value {short(raw)} is not valid YAML") from None
        except ConfigError as err:
            raise ConfigError(f"--set {short(key)}: {err}") from None
        set_path(doc, key.strip(), value)
    check_document(doc)
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
    shown = short(value) if not isinstance(value, dict) else "a mapping"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in RANGE_ERRORS:
        message += f"; accepted: {interval(ExperimentConfig, error['loc'])}"
    elif error["type"] == "finite_number":
        message += "; accepted: a finite number (not NaN or Inf)"
    return f"{path}={shown}: {message}"
