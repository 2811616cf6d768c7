"""Sharing what several experiments build alike: a sweep's cells load the same data and partition it alike.

Inside ``sharing()`` (a sweep, poisonlab/sweep_exec.py), ``shared(key, build)`` builds each key once and hands
every later caller the same object; outside it, it simply builds. What is shared this way is never modified in
place by a run (Datasets are replaced, not edited: poisons return new ones), so sharing changes no result, only
the time and memory each cell spends on loading and partitioning. The cache lives in a context variable: the
threads a sweep starts copy it, and nothing stays cached after the sweep.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("poisonlab_shared_builds", default=None)


@contextmanager
def sharing():
    """Within: shared() builds each key once (thread-safe)."""
    token = _CACHE.set({"lock": threading.Lock(), "items": {}})
    try:
        yield
    finally:
        _CACHE.reset(token)


def shared(key: tuple, build: Callable[[], T], *keep: Any) -> T:
    """build() once per key inside sharing() (else every time). keep: objects whose id() is part of key, held
    with the result so that their ids are not reused while it is cached."""
    cache = _CACHE.get()
    if cache is None:
        return build()
    with cache["lock"]:  # held only to find or make the key's own entry: builds may nest (a run's model needs its data)
        entry = cache["items"].setdefault(key, {"lock": threading.Lock(), "built": False})
    with entry["lock"]:  # one build per key; other keys build meanwhile
        if not entry["built"]:
            entry["value"], entry["keep"], entry["built"] = build(), keep, True
        return entry["value"]
