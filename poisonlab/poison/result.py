"""The result of applying a poison: the poisoned dataset, which rows are poison, and what was done."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from poisonlab.data.dataset import Dataset


@dataclass(frozen=True)
class Poisoned:
    """data: the poisoned dataset; mask: bool (len(data),), True on poisoned rows; info: JSON-able details.

    For in-place poisons (label flip, backdoor, feature noise) data has the original length; for
    concat-style poisons (external, clean-label) data is the original followed by the poison rows.
    """

    data: Dataset
    mask: torch.Tensor
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        mask = torch.as_tensor(self.mask, dtype=torch.bool)
        if mask.shape != (len(self.data),):
            raise ValueError(f"poison mask has shape {tuple(mask.shape)}; expected ({len(self.data)},)")
        object.__setattr__(self, "mask", mask)

    @property
    def count(self) -> int:
        """Number of poisoned rows."""
        return int(self.mask.sum())

    @property
    def poison(self) -> Dataset:
        """Only the poisoned rows."""
        return self.data.subset(self.mask)

    @property
    def clean(self) -> Dataset:
        """Only the untouched rows."""
        return self.data.subset(~self.mask)


def choose(pool: torch.Tensor, fraction: float | None, count: int | None, g: torch.Generator,
           what: str = "samples") -> torch.Tensor:
    """A seeded random subset (sorted int64 positions) of the positions in pool, by fraction of pool or count.

    Exactly one of fraction (in [0, 1]) and count (>= 0, at most len(pool)) must be given.
    """
    from poisonlab.errors import ConfigError, check_range

    if (fraction is None) == (count is None):
        raise ConfigError(f"give exactly one of fraction/rate and count for {what}; got fraction={fraction}, count={count}")
    if fraction is not None:
        check_range("fraction", float(fraction), 0.0, 1.0)
        k = int(round(float(fraction) * len(pool)))
    else:
        k = int(count)
        if k < 0 or k > len(pool):
            raise ConfigError(f"count={count} is out of range; accepted: 0..{len(pool)} eligible {what}")
    perm = torch.randperm(len(pool), generator=g)[:k]
    return pool[perm].sort().values
