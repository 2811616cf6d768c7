"""A bounded YAML reader for experiment files: PyYAML's safe loader with the limits a config never needs past.

``yaml.safe_load`` never runs code, but it accepts documents that are still hostile or mistaken:

- duplicate keys (``rounds: 5`` twice): PyYAML keeps the last one silently; here it is an error naming
  the key and both lines;
- nesting deeper than MAX_DEPTH (a recursion error deep in the composer, or a slow walk later);
- anchors and aliases whose expansion explodes ("billion laughs": nine aliases of nine aliases of ...):
  loading shares one object, but every later copy, dump, error message or sweep-cell name expands it;
  here the expanded size is counted on the loaded graph (memoised per shared node, so counting is cheap)
  and refused above MAX_NODES, and an alias that contains itself is refused as recursive;
- integers with more than MAX_INT_DIGITS digits (Python refuses to parse beyond 4300 digits with a
  ValueError; no setting of poisonlab needs more than 19);
- strings with a NUL byte or longer than MAX_STRING characters.

Each refusal is a ConfigError naming where (line, or key path) and what is accepted. check_document is
also applied to a document after ``--set`` overrides (config/load.py), so the same limits hold there.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import yaml

from poisonlab.errors import ConfigError

MAX_DEPTH = 32
"""Deepest nesting of mappings and lists (the schema itself nests 5 levels; params a few more)."""
MAX_NODES = 100_000
"""Most values in the document once aliases are expanded (a large sweep grid has a few hundred)."""
MAX_INT_DIGITS = 30
"""Longest integer literal (2**63 has 19 digits; the schema's ranges then refuse what is too large)."""
MAX_STRING = 4096
"""Longest string (PATH_MAX on Linux); a run or component name is far shorter."""

_INT = re.compile(r"[-+]?[0-9_]+$")


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and huge integer literals while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML API
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels at line {mark.line + 1};"
                                  f" accepted: at most {MAX_DEPTH} levels of mappings and lists")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D102 - PyYAML API
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(f"duplicate key {short(key)} at line {line} (first at line {seen[key]});"
                                      " accepted: each key once per mapping")
                seen[key] = line
            except TypeError:  # an unhashable key (a list as key): PyYAML reports it below
                continue
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: BoundedLoader, node) -> int:
    digits = loader.construct_scalar(node).replace("_", "").lstrip("+-")
    if len(digits) > MAX_INT_DIGITS:
        raise ConfigError(f"an integer of {len(digits)} digits at line {node.start_mark.line + 1};"
                          f" accepted: at most {MAX_INT_DIGITS} digits")
    return yaml.SafeLoader.construct_yaml_int(loader, node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_bounded(text: str) -> Any:
    """The YAML document in text, within the limits above (a ConfigError otherwise); None if empty."""
    try:
        doc = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"nesting too deep; accepted: at most {MAX_DEPTH} levels of mappings and lists") from None
    check_document(doc)
    return doc


def check_document(doc: Any, where: str = "") -> None:
    """Refuse recursive aliases, more than MAX_NODES expanded values, deep nesting, NUL bytes, long strings."""
    sizes: dict[int, int] = {}
    _size(doc, where, sizes, set(), 0)


def _size(node: Any, path: str, sizes: dict[int, int], active: set[int], depth: int) -> int:
    """Expanded number of values below node (shared containers counted once per use, computed once)."""
    if isinstance(node, str):
        _check_string(node, path)
        return 1
    if isinstance(node, int) and not isinstance(node, bool) and len(str(abs(node))) > MAX_INT_DIGITS:
        raise ConfigError(f"{path or '(top level)'}: an integer of more than {MAX_INT_DIGITS} digits;"
                          f" accepted: at most {MAX_INT_DIGITS} digits")
    if not isinstance(node, (dict, list)):
        return 1
    key = id(node)
    if key in active:
        raise ConfigError(f"{path or '(top level)'}: an alias refers to a mapping or list that contains it;"
                          " accepted: aliases of values defined before, not recursive ones")
    if key in sizes:
        return sizes[key]
    if depth >= MAX_DEPTH:
        raise ConfigError(f"{path}: nesting deeper than {MAX_DEPTH} levels; accepted: at most {MAX_DEPTH}")
    active.add(key)
    items = node.items() if isinstance(node, dict) else enumerate(node)
    total = 1
    for k, v in items:
        sub = f"{path}.{k}" if path else str(k)
        if isinstance(k, str):
            _check_string(k, path or "(top level)")
        total += _size(v, sub, sizes, active, depth + 1)
        if total > MAX_NODES:
            raise ConfigError(f"{path or 'the config'} expands to more than {MAX_NODES} values (aliases of"
                              f" aliases?); accepted: at most {MAX_NODES}")
    active.discard(key)
    sizes[key] = total
    return total


def _check_string(text: str, path: str) -> None:
    if "\x00" in text:
        raise ConfigError(f"{path or '(top level)'}: {short(text)} contains a NUL byte; accepted: text without NUL")
    if len(text) > MAX_STRING:
        raise ConfigError(f"{path or '(top level)'}: a string of {len(text)} characters; accepted: at most"
                          f" {MAX_STRING}")


def short(value: Any, limit: int = 60) -> str:
    """A repr of value bounded in size (reprlib: a few items, a few levels) and cut to limit characters,
    for error messages that must stay one short line whatever the value (a huge alias expansion included)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40
