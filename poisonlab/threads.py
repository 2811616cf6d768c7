"""PyTorch's CPU thread count from ``--threads`` or ``$POISONLAB_THREADS``: one rule for the CLI and the Python API.

An explicit count (``--threads N``, ``apply_threads(N)``) wins for the rest of the process; otherwise
``$POISONLAB_THREADS`` is applied by whichever entry point runs first (the CLI's main or
``run_experiment``), so ``run_experiment`` under ``POISONLAB_THREADS=1`` runs with one thread exactly
as ``poisonlab run`` does (issue #23.6: the API ignored it and ran 25x slower on a busy machine).
"""

from __future__ import annotations

import os

from poisonlab.errors import ConfigError

MAX_THREADS = 4096
"""The most threads accepted (a larger count is a typo, not a machine)."""

_explicit = {"set": False}


def apply_threads(threads: int | None = None) -> int | None:
    """Apply an explicit count, else $POISONLAB_THREADS (unless a count was set explicitly before); return it."""
    if threads is None and _explicit["set"]:
        return None
    value = threads if threads is not None else os.environ.get("POISONLAB_THREADS")
    if value is None or value == "":
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"POISONLAB_THREADS={value!r} is not a whole number; accepted: 1 to {MAX_THREADS}") from None
    if not 1 <= count <= MAX_THREADS:
        where = "--threads" if threads is not None else "POISONLAB_THREADS"
        raise ConfigError(f"{where}={count} is not valid; accepted: 1 to {MAX_THREADS}")
    import torch

    if threads is not None:
        _explicit["set"] = True
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
