"""A small uniform registry: every attack, aggregator, detector, trigger, dataset and model
is looked up by name with ``get(name, **params)``, listed with its paper reference, and a
wrong name or parameter is a one-line ConfigError with the nearest valid names.

Where registries live (one convention for every kind): a kind's Registry is created in a leaf
module that imports none of its members (``poison/registry.py``, ``data/registry.py``, ...); each
member registers itself with ``@REGISTRY.register(name, reference=...)`` in its own file; and the
kind's package ``__init__`` imports every member file explicitly, so the registry is complete as
soon as anything in the package is imported. Nothing registers into a kind from another package,
and nothing is imported lazily to fill a registry. A kind whose members all live in one module
(``fl/partition.py``) keeps its Registry in that module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poisonlab.errors import ConfigError, did_you_mean, unknown_name


@dataclass(frozen=True)
class Entry:
    """One registered name: its factory, a one-line summary and the paper it comes from."""

    name: str
    factory: Callable[..., Any]
    summary: str
    reference: str


class Registry:
    """Names -> factories for one kind of component (e.g. 'aggregator')."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, reference: str = "", summary: str | None = None):
        """Decorator registering a factory under name; summary defaults to its docstring's first line."""

        def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            doc = (inspect.getdoc(factory) or "").strip().splitlines()
            self._entries[name] = Entry(name, factory, summary or (doc[0] if doc else ""), reference)
            return factory

        return wrap

    def entry(self, name: str) -> Entry:
        """The entry for name, or a ConfigError naming the nearest known names."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def get(self, name: str, **params: Any) -> Any:
        """Build the component: factory(**params), with parameter names checked first."""
        factory = self.entry(name).factory
        check_params(f"{self.kind} '{name}'", factory, params)
        return factory(**params)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def check_params(what: str, factory: Callable[..., Any], params: dict[str, Any],
                 extra: tuple[inspect.Parameter, ...] = ()) -> None:
    """Raise ConfigError if params has a name the factory (or the extra keyword parameters) does not take."""
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    sig = sig.replace(parameters=[*sig.parameters.values(), *extra])
    accepted = [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [n for n, p in sig.parameters.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and n not in params]
    if missing:
        raise ConfigError(f"{what} needs parameter {', '.join(map(repr, missing))};"
                          f" accepted: {', '.join(accepted)}")
    for key in params:
        if key not in accepted:
            raise ConfigError(f"{what} does not take parameter '{key}';{did_you_mean(key, accepted)}"
                              f" accepted: {', '.join(accepted) or 'none'}")
