"""Backdoor persistence: how many rounds a backdoor survives after the attacker stops.

Used for the durability experiments of Bagdasaryan et al. 2020 and Wang et al. 2020: after the
last attacking round r_a, the backdoor persists until the first evaluated round whose attack
success rate is below a threshold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from poisonlab.errors import ConfigError


@dataclass(frozen=True)
class Persistence:
    """rounds: rounds after r_a with ASR still >= threshold before the first drop below it
    (first_below - r_a - 1); censored: True if ASR never fell below it in the history (rounds is then
    a lower bound, counted to the last evaluated round); first_below: that round or None."""

    rounds: int
    censored: bool
    last_attack_round: int
    first_below: int | None
    threshold: float


def _field(record, key: str):
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)


def persistence(history: Iterable, last_attack_round: int, threshold: float = 0.5) -> Persistence:
    """Persistence of a backdoor from a per-round history (dicts or objects with round, attack_success_rate).

    Rounds without an ASR (not evaluated) are skipped, so the count is at the evaluation resolution.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold={threshold!r} is out of range; accepted: [0, 1]")
    after = sorted((int(_field(r, "round")), float(_field(r, "attack_success_rate"))) for r in history
                   if _field(r, "round") is not None and int(_field(r, "round")) > last_attack_round
                   and _field(r, "attack_success_rate") is not None)
    for rnd, asr in after:
        if asr < threshold:
            return Persistence(rnd - last_attack_round - 1, False, last_attack_round, rnd, threshold)
    last = after[-1][0] if after else last_attack_round
    return Persistence(last - last_attack_round, True, last_attack_round, None, threshold)
