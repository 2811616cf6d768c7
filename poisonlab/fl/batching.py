"""Mini-batches of local training: which samples each of k clients sees at each local step.

Clients take their own number of steps (epochs * ceil(n_i / B)). Short last batches are padded and the
padding gets zero loss weight, so each client's loss is the mean over its real samples, as in the plain
loop (reference.py); the same plan drives the vectorized and the plain loop. With ``cfg.augment`` the plan also
holds each sample's random crop and flip (data/augment.py), so both engines apply identical draws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from poisonlab.data.augment import Draws, draw

if TYPE_CHECKING:
    from poisonlab.config.augment import Augment
    from poisonlab.fl.local import LocalConfig


@dataclass(frozen=True)
class BatchPlan:
    """Which samples each client sees at each step.

    index: (S, k, B) int64 rows of the concatenated client data (padding points at row 0);
    weight: (S, k, B) float32 loss weights, 1/len(batch) for real samples and 0 for padding;
    steps: (k,) int64 steps each client takes (S = steps.max());
    augment: None (no augmentation) or the (S, k, B) Draws of each slot's crop and flip (padding: the identity).
    """

    index: torch.Tensor
    weight: torch.Tensor
    steps: torch.Tensor
    augment: Draws | None = None

    def to(self, device: torch.device) -> BatchPlan:
        """The plan on device (drawn on the CPU, moved once per round; the same plan on every device). The
        augmentation draws stay on the CPU: data/augment.apply moves each step's slice to the batch's device."""
        return BatchPlan(self.index.to(device), self.weight.to(device), self.steps.to(device), self.augment)

    def clients(self, lo: int, hi: int) -> BatchPlan:
        """The plan of clients lo..hi-1 (views)."""
        aug = None if self.augment is None else self.augment[:, lo:hi]
        return BatchPlan(self.index[:, lo:hi], self.weight[:, lo:hi], self.steps[lo:hi], aug)


def plan_batches(sizes: list[int], cfg: LocalConfig, generators: list[torch.Generator]) -> BatchPlan:
    """Per-client shuffled mini-batches for cfg.epochs epochs, one generator per client.

    Client i's rows in the concatenated data start at sum(sizes[:i]). Each epoch is one
    torch.randperm(n_i, generator=generators[i]); the last batch of an epoch may be short. With cfg.augment,
    client i then draws the crop and flip of its E * n_i samples from the same generator, after its permutations.
    """
    E = cfg.epochs
    slots, offset, weight, steps = _batch_layout(tuple(sizes), cfg.batch_size, E)
    index = torch.zeros(weight.numel(), dtype=torch.long, device="cpu")
    perms = [torch.randperm(m, generator=g, device="cpu") for m, g in zip(sizes, generators) for _ in range(E)]
    if perms and slots.numel():
        index[slots] = torch.cat(perms) + offset
    aug = None if cfg.augment is None else _plan_draws(sizes, E, generators, slots, weight.shape, cfg.augment)
    return BatchPlan(index.reshape(weight.shape), weight, steps, aug)


def _plan_draws(sizes: list[int], E: int, generators: list[torch.Generator], slots: torch.Tensor,
                shape: torch.Size, augment: Augment) -> Draws:
    """Each slot's crop and flip, (S, k, B): client i draws for its E * n_i samples (in cat(perms) order) from
    generators[i]; padding slots keep the identity (shift 0, no flip)."""
    shift = torch.zeros(shape.numel(), 2, dtype=torch.long)
    flip = torch.zeros(shape.numel(), dtype=torch.bool)
    drawn = [draw(E * m, g, augment.crop_padding, augment.flip) for m, g in zip(sizes, generators)]
    if drawn and slots.numel():
        shift[slots] = torch.cat([d.shift for d in drawn])
        flip[slots] = torch.cat([d.flip for d in drawn])
    return Draws(shift.reshape(*shape, 2), flip.reshape(shape))


@functools.lru_cache(maxsize=64)
def _batch_layout(sizes: tuple[int, ...], B: int, E: int) -> tuple[torch.Tensor, ...]:
    """Where each drawn element goes in the (S, k, B) plan; depends only on the sizes, so it is cached
    (a federation samples the same clients again and again; this was 11% of a small MLP round).
    The cached tensors are shared between plans: read them, never write to them.

    Returns (slots, offset, weight, steps): the flat plan position and the data-row offset of each
    element of cat(perms) (client-major, epoch-major within), the (S, k, B) loss weights, the steps.
    """
    k = len(sizes)
    n = torch.tensor(sizes, dtype=torch.long, device="cpu")
    per_epoch = (n + B - 1) // B
    steps = E * per_epoch
    S = int(steps.max()) if k else 0
    weight = torch.zeros(S * k * B, dtype=torch.float32, device="cpu")
    client = torch.repeat_interleave(torch.arange(k, device="cpu"), E * n)  # each drawn element's client
    first = torch.cumsum(E * n, 0) - E * n
    pos = torch.arange(len(client), device="cpu") - first[client]
    m = n[client]
    epoch, j = pos // m, pos % m
    step = epoch * per_epoch[client] + j // B
    slots = (step * k + client) * B + j % B
    offset = (torch.cumsum(n, 0) - n)[client]
    weight[slots] = 1.0 / torch.clamp(m - (j // B) * B, max=B).float()  # 1 / length of the element's batch
    return slots, offset, weight.reshape(S, k, B), steps
