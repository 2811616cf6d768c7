"""Client roles: an Adversary controls some clients, poisons their data and/or rewrites their updates.

Honest clients train on their own data. An adversary's clients, in rounds where its Schedule is
active: train on poisoned local data (``poison(clean_dataset, client_id)`` or explicit ``datasets``),
then have their update rows multiplied by ``boost`` and rewritten by ``attack``. In other rounds
they behave honestly (clean data, untouched update) and count as honest. Several adversaries can
coexist (e.g. DBA colluders, each with its own trigger piece); their client sets are disjoint.
With ``force=True`` an active adversary's clients are always in the round's sample (needed for
single-shot model replacement).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.types import Schedule, UpdateAttack
from poisonlab.rng import generator


@dataclass(frozen=True)
class Adversary:
    """clients: a count (int), a fraction of K (float in (0, 1)) or explicit ids (a list).

    poison: callable(clean Dataset, client_id) -> poisoned Dataset; datasets: explicit poisoned data
    by client id (takes precedence); attack: an UpdateAttack on the (k, d) matrix; schedule: when it
    acts; boost: factor applied to its rows before the attack; force: force its clients into the
    sample in active rounds; name: for reports; omniscient: whether its attack may read the honest rows
    (False: the attack sees ctx.omniscient=False and estimates from its own rows).
    """

    clients: int | float | Sequence[int] = 1
    poison: Callable | None = None
    datasets: Mapping[int, object] | None = None
    attack: UpdateAttack | None = None
    schedule: Schedule = field(default_factory=Schedule)
    boost: float | None = None
    force: bool = False
    name: str = "adversary"
    omniscient: bool = True


def _count(clients: int | float, num_clients: int) -> int:
    if isinstance(clients, float):
        if not 0.0 < clients < 1.0:
            raise ConfigError(f"adversary clients={clients} as a fraction must be in (0, 1); or give a count or ids")
        return max(1, round(clients * num_clients))
    return int(clients)


def resolve_clients(adversaries: Sequence[Adversary], num_clients: int, seed: int) -> list[list[int]]:
    """The client ids of each adversary: explicit ids as given, counts drawn (seeded) from the rest; disjoint."""
    taken: set[int] = set()
    out: list[list[int]] = []
    explicit = [not isinstance(a.clients, (int, float)) for a in adversaries]
    for a in (a for a, e in zip(adversaries, explicit) if e):
        ids = [int(c) for c in a.clients]
        bad = [c for c in ids if not 0 <= c < num_clients]
        if bad or len(set(ids)) != len(ids) or taken & set(ids):
            raise ConfigError(f"adversary '{a.name}' client ids {ids} must be distinct, unused by other adversaries"
                              f" and in [0, {num_clients - 1}]")
        taken |= set(ids)
    for i, a in enumerate(adversaries):
        if explicit[i]:
            out.append(sorted(int(c) for c in a.clients))
            continue
        n = _count(a.clients, num_clients)
        free = torch.tensor([c for c in range(num_clients) if c not in taken], dtype=torch.long)
        if not 0 <= n <= len(free):
            raise ConfigError(f"adversary '{a.name}' wants {n} clients but only {len(free)} of {num_clients} are free")
        pick = free[torch.randperm(len(free), generator=generator(seed, "adversary", i))[:n]]
        ids = sorted(int(c) for c in pick)
        taken |= set(ids)
        out.append(ids)
    return out
