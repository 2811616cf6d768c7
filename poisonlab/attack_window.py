"""Does each adversary act at all within the configured rounds? (issue #23.2, #20 class 6)

An adversary whose schedule starts after the last round (``schedule.start: 10`` with ``rounds: 5``),
ends before it starts, or lists only rounds past the end never attacks: the run then reports
"ASR 0.00%" as if a defense had worked. ``unfired_adversaries`` names each such adversary in one
line; run_experiment prints it as a warning at the start and stores it in metrics.json
``warnings`` (the report shows it as a banner).

(Written here because the config-time check planned in the config package was not there yet;
the lead may move it beside config/schedule.py.)
"""

from __future__ import annotations


def first_active_round(schedule, rounds: int) -> int | None:
    """The first 0-based round r < rounds in which the schedule is active, or None (closed form, no loop)."""
    if schedule.rounds is not None:
        inside = [r for r in schedule.rounds if 0 <= r < rounds]
        return min(inside) if inside else None
    if schedule.end is not None and schedule.end <= schedule.start:
        return None
    return schedule.start if schedule.start < rounds else None


def unfired_adversaries(config) -> list[str]:
    """One line per adversary that never acts within config.federated.rounds ([] for centralized runs)."""
    fed = config.federated
    if fed is None:
        return []
    lines = []
    for i, adversary in enumerate(fed.adversaries()):
        if not (adversary.poison or adversary.attack):
            continue
        if first_active_round(adversary.schedule, fed.rounds) is None:
            where = "federated.adversary" + (f".{i}" if isinstance(fed.adversary, list) else "")
            s = adversary.schedule
            when = f"rounds {list(s.rounds)}" if s.rounds is not None else (
                f"start={s.start}" + (f", end={s.end}" if s.end is not None else ""))
            lines.append(f"{where} never acts: its schedule ({when}) has no round below federated.rounds="
                         f"{fed.rounds}, so the attack success rate measures no attack")
    return lines
