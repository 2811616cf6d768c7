"""An adversary's settings (the YAML's `federated.adversary` and fl/adversary.py's Adversary): one definition.

Only the settings live here; the runtime Adversary (fl/adversary.py) adds what it does (its poison
and attack callables), the YAML's AdversarySpec (schema.py) the named components that build them.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from poisonlab.config.base import Section
from poisonlab.config.schedule import Schedule


class AdversaryConfig(Section):
    """clients: a count (int), a fraction of K (float in (0, 1)) or explicit ids (a list); schedule: when
    it acts; boost: factor applied to its rows before the attack (1.0: none); force_participation: its
    clients are always in the sample in active rounds (needed for single-shot model replacement);
    omniscient: whether its attack may read the honest rows (False: the attack sees ctx.omniscient=False
    and estimates from its own rows)."""

    label = "adversary"

    clients: int | float | list[int] = 0
    schedule: Schedule = Field(default_factory=Schedule)
    boost: float = Field(1.0, gt=0.0)
    force_participation: bool = True
    omniscient: bool = True

    @field_validator("clients")
    @classmethod
    def _check_clients(cls, c: int | float | list[int]) -> int | float | list[int]:
        if isinstance(c, float) and not 0.0 <= c < 1.0:
            raise ValueError("a fraction of clients must be in [0, 1); give a count as an integer")
        if isinstance(c, int) and c < 0:
            raise ValueError("a count of clients must be >= 0")
        return c
