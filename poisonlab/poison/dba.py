"""Distributed backdoor attack (DBA; Xie, Huang, Chen and Li, ICLR 2020).

A global trigger is split into pieces; colluding client i trains with a backdoor whose trigger
is only piece i, and the attack success rate is measured with the FULL trigger. The split works
on any trigger with a fixed footprint (patch, pattern, pixel, a fixed-position image, the tabular
"features" trigger): its footprint is the set of elements it changes, found by stamping an
all-zeros and an all-ones input; the footprint's bounding box is cut into bands (rows, cols) or a
grid, or, for tabular data, its features into contiguous groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.backdoor import Backdoor
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS, TRIGGERS
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator

LAYOUTS = ("grid", "rows", "cols")


def footprint(trigger: Trigger, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """bool sample_shape: the elements the trigger changes; ConfigError if it moves between draws."""
    zeros, ones = torch.zeros(1, *sample_shape), torch.ones(1, *sample_shape)

    def touched(seed: int) -> torch.Tensor:
        g0, g1 = generator(seed, "dba", "footprint", 0), generator(seed, "dba", "footprint", 1)
        return ((trigger(zeros, g0) != zeros) | (trigger(ones, g1) != ones))[0]

    first = touched(0)
    if not torch.equal(first, touched(1)) or not bool(first.any()):
        raise ConfigError(f"trigger {trigger.to_dict()} has no fixed footprint; DBA needs a trigger at a fixed"
                          " position (e.g. patch with a corner position, pattern, pixel, features)")
    return first


def _grid(pieces: int) -> tuple[int, int]:
    rows = max(d for d in range(1, int(math.isqrt(pieces)) + 1) if pieces % d == 0)
    return rows, pieces // rows


def piece_masks(mask: torch.Tensor, pieces: int, layout: str = "grid") -> list[torch.Tensor]:
    """Split a footprint (bool (c, h, w) or (f,)) into `pieces` disjoint non-empty masks covering it."""
    if layout not in LAYOUTS:
        raise ConfigError(f"dba layout '{layout}' is not known; accepted: {', '.join(LAYOUTS)}")
    if pieces < 1:
        raise ConfigError(f"pieces={pieces} is invalid; accepted: an integer >= 1")
    if mask.dim() == 1:
        idx = torch.nonzero(mask).flatten()
        groups = torch.tensor_split(idx, pieces)
        out = [torch.zeros_like(mask).index_fill_(0, g, True) for g in groups]
    else:
        spatial = mask.any(dim=0)
        rows, cols = torch.nonzero(spatial, as_tuple=True)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        nr, nc = {"grid": _grid(pieces), "rows": (pieces, 1), "cols": (1, pieces)}[layout]
        out = []
        for rb in torch.tensor_split(torch.arange(r0, r1), nr):
            for cb in torch.tensor_split(torch.arange(c0, c1), nc):
                box = torch.zeros_like(spatial)
                if len(rb) and len(cb):
                    box[rb[0]:rb[-1] + 1, cb[0]:cb[-1] + 1] = True
                out.append(mask & box)
    if any(not bool(m.any()) for m in out):
        raise ConfigError(f"the trigger's footprint ({int(mask.sum())} elements) cannot be split into {pieces}"
                          f" non-empty '{layout}' pieces; use fewer pieces or a larger trigger")
    return out


@TRIGGERS.register("dba_piece", reference="Xie et al. 2020, DBA: Distributed backdoor attacks against federated learning (ICLR)")
@dataclass(frozen=True, eq=False)
class PieceTrigger(Trigger):
    """Piece `piece` of `pieces` of a global trigger: stamps the global trigger only inside that piece."""

    trigger: Trigger | dict | str = "pattern"
    piece: int = 0
    pieces: int = 4
    layout: str = "grid"
    name = "dba_piece"

    def __post_init__(self):
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        if not 0 <= int(self.piece) < int(self.pieces):
            raise ConfigError(f"piece={self.piece} is out of range; accepted: 0..{int(self.pieces) - 1}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"dba layout '{self.layout}' is not known; accepted: {', '.join(LAYOUTS)}")

    def mask(self, sample_shape: tuple[int, ...]) -> torch.Tensor:
        """bool sample_shape: where this piece stamps."""
        return piece_masks(footprint(self.trigger, tuple(sample_shape)), int(self.pieces), self.layout)[int(self.piece)]

    def __call__(self, x, generator=None):
        x = torch.as_tensor(x)
        sample_shape = tuple(x.shape[1:]) if x.dim() in (2, 4) else tuple(x.shape)
        return torch.where(self.mask(sample_shape), self.trigger(x, generator), x)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": {"trigger": self.trigger.to_dict(), "piece": int(self.piece),
                                              "pieces": int(self.pieces), "layout": self.layout}}


def dba_backdoors(trigger: Trigger | dict | str, pieces: int, target: int = 0, rate: float = 0.3,
                  layout: str = "grid") -> tuple[list[Backdoor], Backdoor]:
    """(one Backdoor per colluder, each with its own piece; the full-trigger Backdoor for measuring ASR)."""
    full = make_trigger(trigger)
    local = [Backdoor(trigger=PieceTrigger(full, i, pieces, layout), target=target, rate=rate) for i in range(pieces)]
    return local, Backdoor(trigger=full, target=target, rate=rate)


@POISONS.register("dba", reference="Xie et al. 2020, DBA: Distributed backdoor attacks against federated learning (ICLR)")
@dataclass(frozen=True, eq=False)
class DBA(Poison):
    """The poison of one DBA colluder: trains with piece `piece` of the trigger, measured with the full one.

    apply(data, seed) is a Backdoor with PieceTrigger(trigger, piece, pieces, layout); triggered(test_set)
    stamps the FULL trigger (Xie et al. 2020 evaluate the assembled global trigger). Registered as
    "dba" so a config lists one adversary per colluder, piece 0..pieces-1.
    """

    trigger: Trigger | dict | str = "pattern"
    piece: int = 0
    pieces: int = 4
    target: int = 0
    rate: float | None = None
    count: int | None = None
    layout: str = "grid"
    name = "dba"

    def _local(self) -> Backdoor:
        return Backdoor(trigger=PieceTrigger(self.trigger, self.piece, self.pieces, self.layout),
                        target=self.target, rate=self.rate, count=self.count)

    def apply(self, data, seed: int = 0):
        """The colluder's data with its piece stamped on rate (or count) samples relabelled target."""
        poisoned = self._local().apply(data, seed)
        return type(poisoned)(poisoned.data, poisoned.mask, {**poisoned.info, "attack": "dba", "piece": int(self.piece)})

    def triggered(self, test_set, seed: int = 0):
        """Every test input with the full (assembled) trigger; true labels kept."""
        return Backdoor(trigger=make_trigger(self.trigger), target=self.target, rate=0.0).triggered(test_set, seed)
