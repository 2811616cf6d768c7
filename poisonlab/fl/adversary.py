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
from typing import Any

import torch
from pydantic import ConfigDict, model_validator

from poisonlab.config.adversary import AdversaryConfig
from poisonlab.errors import ConfigError
from poisonlab.rng import generator


class Adversary(AdversaryConfig):
    """An adversary as the engine runs it: its settings (AdversaryConfig, defined once with the YAML's
    `adversary` section: clients, schedule, boost, force_participation, omniscient) and what it does.

    poison: callable(clean Dataset, client_id) -> poisoned Dataset; datasets: explicit poisoned data
    by client id (takes precedence); attack: an UpdateAttack on the (k, d) matrix; name: for reports.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    poison: Callable | None = None
    datasets: Mapping[int, Any] | None = None
    attack: Callable | None = None
    name: str = "adversary"

    # MERGE: `force` is the engine's and the Python callers' name for force_participation (read by fl/federation.py
    # and flower/, passed as Adversary(force=True) by tests); once they say force_participation, both aliases can go.
    @model_validator(mode="before")
    @classmethod
    def _force_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "force" in data:
            data = {k: v for k, v in data.items() if k != "force"} | {"force_participation": data["force"]}
        return data

    @property
    def force(self) -> bool:
        """force_participation, by the name the engine reads."""
        return self.force_participation


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
