"""RoundContext.extras whose costly server-side entries are computed only when a rule or an attack reads them.

The server's own update on its root set (FLTrust's and MONNA's "server_update": a local training run) and the
global model's validation accuracy ("base_accuracy") are needed by a few rules only; computed every round, every
cell of a defense matrix paid for them. Each is a function of (seed, round, global model) alone, drawing from
its own derived generator (poisonlab/rng.py), so computing it later, or not at all, changes no other value:
what a reader gets is what the eager dict held.

Reading a key (``[]``, ``get``, ``items()``, ``{**extras}``) computes it once; ``in`` and ``len`` do not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


class LazyExtras(Mapping):
    """A read-only mapping of ``values`` plus ``lazy`` entries (key -> zero-argument function), each computed on
    its first read and kept."""

    def __init__(self, values: Mapping[str, Any], lazy: Mapping[str, Callable[[], Any]]):
        self._values = dict(values)
        self._lazy = {k: f for k, f in lazy.items() if k not in self._values}

    def __getitem__(self, key: str) -> Any:
        if key in self._lazy:
            self._values[key] = self._lazy.pop(key)()
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter([*self._values, *self._lazy])

    def __len__(self) -> int:
        return len(self._values) + len(self._lazy)

    def pending(self) -> list[str]:
        """The keys not computed yet (for tests and logs)."""
        return list(self._lazy)
