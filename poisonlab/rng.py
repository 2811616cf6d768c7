"""Explicit, derived randomness: no global random state anywhere in poisonlab.

Every draw takes a ``torch.Generator`` (or numpy ``Generator``) derived from the
experiment seed plus a purpose and ids, e.g. ``generator(seed, "local", round, client)``.
Streams are independent by construction (SHA-256 of the key), so adding a client or a
purpose never reshuffles another stream, and the same config and seed are bit-identical.

Devices: every generator here is a CPU generator and every draw is made on the CPU, then moved to the run's
device (poisonlab/device.py): model initialisation, splits, partitions, client sampling, the local mini-batch
plans (moved once per round), the centralized batch order (once per epoch), aggregator and attack noise, detector
sampling. A plan, a sample and every noise vector are therefore bit-identical on every device; CPU and CUDA
runs differ only by the float rounding of their kernels, and a device repeats itself bit for bit (on CUDA with
torch.use_deterministic_algorithms, device.deterministic). docs/devices.md has the full table.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from (seed, *keys) by SHA-256; stable across runs and platforms."""
    text = "\x1f".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys: object) -> torch.Generator:
    """A fresh CPU torch.Generator seeded from derive_seed(seed, *keys)."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *keys))
    return g


def numpy_rng(seed: int, *keys: object) -> np.random.Generator:
    """A fresh numpy Generator (PCG64) seeded from derive_seed(seed, *keys)."""
    return np.random.default_rng(derive_seed(seed, *keys))


@contextlib.contextmanager
def construction_stream(seed: int, *keys: object) -> Iterator[None]:
    """Run third-party construction code (a model's ``__init__``) on a forked, seeded copy of torch's CPU stream.

    The one place poisonlab touches torch's default generator, and only for code it does not own: a
    layer's default ``reset_parameters`` or a user's ``torch.randn`` in a model factory take no Generator,
    so the only way to make what they draw a function of the experiment seed is to seed the stream they
    read. It is forked (``fork_rng``: the caller's state is restored on exit, also on error) and seeded
    from ``derive_seed(seed, *keys)``, so nothing outside depends on it and nothing inside depends on what
    ran before. poisonlab's own draws never use it: every layer type whose init it knows is re-drawn
    afterwards from an explicit ``generator`` (models/build.py ``init_parameters``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(derive_seed(seed, *keys))
        yield


def as_generator(rng: torch.Generator | int | None, *keys: object) -> torch.Generator:
    """Accept a Generator (returned as is), an int seed (derived with keys) or None (seed 0)."""
    if isinstance(rng, torch.Generator):
        return rng
    return generator(0 if rng is None else int(rng), *keys)
