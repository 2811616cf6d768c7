"""Exhaustive search over the subsets of n - f rows (MDA, SMEA): their count, its limit, their masks.

Both rules are defined as a minimum over all C(n, f) ways to leave f rows out, which grows as n^f:
C(100, 1) = 100, C(100, 2) = 4950, C(30, 5) = 142506, C(100, 5) = 75287520. A rule refuses in one line
(at config check and at call) a round with more than max_subsets subsets rather than run for hours;
the subsets themselves are searched as tensors, a chunk of masks at a time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch

from poisonlab.errors import ConfigError

MAX_SUBSETS = 100_000
"""Default limit on C(n, f): about a second of search at n = 100 for either rule."""


def check_subsets(rule: str, n: int, f: int, max_subsets: int) -> None:
    """ConfigError unless 2f < n and C(n, f) <= max_subsets."""
    if not 2 * f < n:
        raise ConfigError(f"{rule} needs n > 2f; got n={n}, f={f}")
    count = math.comb(n, f)
    if count > max_subsets:
        raise ConfigError(f"{rule} searches all C(n, f) = C({n}, {f}) = {count} subsets exactly, above"
                          f" max_subsets={max_subsets}; accepted: a smaller f or n, or a larger max_subsets")


def left_out_masks(n: int, f: int, device: torch.device, chunk: int = 4096) -> Iterator[torch.Tensor]:
    """bool (c, n) masks, True at the f rows left out, over all C(n, f) subsets in lexicographic order,
    `chunk` subsets at a time."""
    combos = itertools.combinations(range(n), f)
    while True:
        block = list(itertools.islice(combos, chunk))
        if not block:
            return
        mask = torch.zeros(len(block), n, dtype=torch.bool, device=device)
        if f:
            rows = torch.arange(len(block), device=device)[:, None]
            mask[rows, torch.tensor(block, dtype=torch.long, device=device)] = True
        yield mask
