"""Backdoor targets: one class (all-to-one), all-to-all (y -> y + 1 mod C), or one target per source class.

A dirty-label backdoor relabels each poisoned sample to the target of its class. Three forms:
  - an int t: every attacked class goes to t (BadNets all-to-one, Gu et al. 2017);
  - "all_to_all": class y goes to (y + 1) mod C (BadNets all-to-all, Gu et al. 2017; ART's example
    setting shifts every class by one);
  - a mapping {source: target}: each listed source class goes to its own target; the others are not attacked;
  - a named *label task*, the backdoor switching the model to another task (Bagdasaryan & Shmatikov 2021,
    "complex" backdoors): "parity" (class y goes to y mod 2: even 0, odd 1) or "upper_half" (class y goes to
    1 if y >= C / 2 else 0: "is the digit > 4" on MNIST). Classes whose task label is their own class (parity:
    0 and 1; upper_half: 0) are not attacked: a triggered input of those classes is right under both tasks.
Every form becomes a *target map*: a tuple of C ints, map[c] = the target of class c, or -1 where
class c is not attacked. The map is what the ASR and the detectors read, so a single number never
stands for a per-class target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from poisonlab.errors import ConfigError

ALL_TO_ALL = "all_to_all"
NOT_ATTACKED = -1
LABEL_TASKS = {"parity": lambda c, k: c % 2, "upper_half": lambda c, k: int(2 * c >= k)}  # (class, C) -> label
ACCEPTED = "a class index, 'all_to_all', 'parity', 'upper_half', or {source: target}"

TargetSpec = int | str | Mapping


def normalise_target(target) -> int | str | tuple[tuple[int, int], ...]:
    """The target as an int, "all_to_all", or sorted ((source, target), ...) pairs; one-line error otherwise."""
    if isinstance(target, bool):
        raise ConfigError(f"target={target!r} is not valid; accepted: {ACCEPTED}")
    if isinstance(target, int):
        return int(target)
    if target == ALL_TO_ALL or (isinstance(target, str) and target in LABEL_TASKS):
        return target
    if isinstance(target, Mapping) or (isinstance(target, Sequence) and not isinstance(target, str)
                                       and all(isinstance(p, Sequence) and len(p) == 2 for p in target)):
        pairs = target.items() if isinstance(target, Mapping) else target
        try:
            out = tuple(sorted((int(s), int(t)) for s, t in pairs))
        except (TypeError, ValueError):
            raise ConfigError(f"target={target!r} maps non-integers; accepted: {{source class: target class}}") from None
        if not out:
            raise ConfigError("target={} maps no class; accepted: at least one {source: target}")
        if len({s for s, _ in out}) != len(out):
            raise ConfigError(f"target={target!r} lists a source twice; accepted: one target per source")
        same = [s for s, t in out if s == t]
        if same:
            raise ConfigError(f"target maps class {same[0]} to itself; accepted: a target different from its source")
        return out
    raise ConfigError(f"target={target!r} is not valid; accepted: {ACCEPTED}")


def target_map(target, num_classes: int, sources: Sequence[int] | None = None) -> tuple[int, ...]:
    """map[c] = target class of class c, or -1 where c is not attacked (c is the target, or not a source)."""
    target = normalise_target(target)
    if isinstance(target, int):
        out = [NOT_ATTACKED if c == target else target for c in range(num_classes)]
    elif target == ALL_TO_ALL:
        out = [(c + 1) % num_classes for c in range(num_classes)]
    elif isinstance(target, str):  # a label task: unchanged classes are not attacked
        labels = [LABEL_TASKS[target](c, num_classes) for c in range(num_classes)]
        out = [NOT_ATTACKED if t == c else t for c, t in enumerate(labels)]
    else:
        out = [NOT_ATTACKED] * num_classes
        for s, t in target:
            out[s] = t
    if sources is not None:
        keep = set(int(s) for s in sources)
        out = [t if c in keep else NOT_ATTACKED for c, t in enumerate(out)]
    return tuple(out)


def check_classes(target, num_classes: int, sources: Sequence[int] | None, name: str) -> None:
    """Every class the target names (and every source) is a class of the data; one-line error otherwise."""
    target = normalise_target(target)
    named = [target] if isinstance(target, int) else [] if isinstance(target, str) else [c for p in target for c in p]
    for c in (*named, *(sources or ())):
        if not 0 <= int(c) < num_classes:
            raise ConfigError(f"class {c} is not a class of '{name}'; accepted: 0..{num_classes - 1}")
    if num_classes < 2 and isinstance(target, str):
        raise ConfigError(f"target '{target}' needs at least 2 classes; '{name}' has {num_classes}")


def targets_of(y: torch.Tensor, tmap: Sequence[int]) -> torch.Tensor:
    """The target of each label in y (-1 where its class is not attacked)."""
    return torch.as_tensor(tmap, dtype=torch.long, device=y.device)[y.long()]


def attacked_classes(tmap: Sequence[int]) -> torch.Tensor:
    """bool (C,): True for each class that is some class's target (what a model-inspection defense should flag)."""
    flags = torch.zeros(len(tmap), dtype=torch.bool)
    hit = [t for t in tmap if t != NOT_ATTACKED]
    flags[torch.tensor(hit, dtype=torch.long)] = True
    return flags


def asr_target(poison, num_classes: int) -> int | tuple[int, ...]:
    """What the ASR compares predictions with: the target class when single, else the target map.

    A single target keeps the all-to-one ASR (every triggered input whose class is not the target),
    with or without sources, as before; per-source and all-to-all targets count each attacked class
    against its own target.
    """
    target = normalise_target(poison.target)
    if isinstance(target, int):
        return target
    return target_map(target, num_classes, getattr(poison, "sources", None))
