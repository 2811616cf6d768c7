"""Applying an experiment's defenses: the one path shared by ``poisonlab run`` and the leaderboard.

After the centralized pipeline has trained the poisoned model, each configured defense gets what its
stage needs (defend/base.py): the poisoned model, the poisoned training set, the defender's clean set
and a factory for a fresh model. The defended model is scored on the clean test set and on the same
triggered test set the undefended model was scored on (the first poison that has a trigger, stamped
with the experiment's seed), and compared with the undefended model (DER).

The defender's clean set is a seeded ``clean_fraction`` share of the training rows the poisons left
untouched (BackdoorBench gives defenses 5% of the clean training data); it is never drawn from the
test set, so the test figures stay honest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import STAGES, Defended, defense_name, require
from poisonlab.defend.evaluate import BackdoorScores, backdoor_scores, der
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import host
from poisonlab.errors import ConfigError, PoisonlabError, check_range
from poisonlab.rng import generator

PLACEHOLDER_LABELS = frozenset({"edge_case"})  # triggered sets whose labels are not the inputs' true classes


def defender_clean_set(data: Dataset, poisoned_mask: torch.Tensor, fraction: float, seed: int) -> Dataset:
    """A seeded share ``fraction`` of the rows the poisons left untouched (at least one row per the share)."""
    check_range("clean_fraction", fraction, 0.0, 1.0, low_open=True)
    clean_rows = torch.nonzero(~poisoned_mask.cpu()).flatten()
    if len(clean_rows) == 0:
        raise ConfigError("every training row is poisoned; a defense needs clean rows (accepted: a poison rate < 1)")
    count = max(1, int(round(fraction * len(clean_rows))))
    pick = clean_rows[torch.randperm(len(clean_rows), generator=generator(seed, "defender-clean"), device="cpu")[:count]]
    return data.subset(pick.sort().values.to(data.y.device))


def triggered_test_set(poisons: Sequence[Any], test_set: Dataset, seed: int) -> tuple[Dataset | None, Any, bool]:
    """(the triggered test set of the first poison with a trigger, its ASR target, whether its labels are true
    classes); (None, None, True) without a trigger. The same set centralized.py scores the ASR on."""
    from poisonlab.poison.targets import asr_target

    p = next((p for p in poisons if p.has_trigger), None)
    if p is None:
        return None, None, True
    with host():
        trig = p.triggered(test_set, seed)
    return trig, asr_target(p, test_set.num_classes), p.name not in PLACEHOLDER_LABELS


def apply_defense(defense: Any, *, model: nn.Module, data: Dataset, clean: Dataset,
                  build: Callable[[], nn.Module], train_cfg: Any, seed: int) -> Defended:
    """defense.defend(...) with the inputs its stage gets, after checking the ones it requires."""
    if getattr(defense, "stage", None) not in STAGES:
        raise ConfigError(f"defense '{defense_name(defense)}' has stage {getattr(defense, 'stage', None)!r};"
                          f" accepted: {', '.join(STAGES)}")
    given = {"model": model, "data": data, "clean": clean, "build": build, "train_cfg": train_cfg}
    require(defense, **given)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = defense.defend(**given, seed=seed)
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        raise RuntimeError(f"defense '{defense_name(defense)}' changed the caller's model; a defense must work on a copy")
    if not isinstance(out, Defended):
        raise TypeError(f"defense '{defense_name(defense)}' returned {type(out).__name__}; expected Defended")
    if out.model is model:
        raise ValueError(f"defense '{defense_name(defense)}' returned the caller's model; it must return a new one")
    return out


def defense_record(name: str, params: dict, defense: Any, defended: Defended, scores: BackdoorScores,
                   baseline: BackdoorScores, seconds: float) -> dict:
    """One metrics.json "defenses" entry."""
    return {"defense": name, "params": params, "stage": defense.stage, **scores.to_dict(),
            "der": der(baseline, scores), "wall_time": seconds,
            "details": {k: v for k, v in defended.details.items() if isinstance(v, (int, float, str, bool, list, type(None)))}}


def run_defenses(specs: Sequence[tuple[str, dict]], *, model: nn.Module, poisoned: Dataset, mask: torch.Tensor,
                 test_set: Dataset, poisons: Sequence[Any], build: Callable[[], nn.Module], train_cfg: Any,
                 seed: int, clean_fraction: float = 0.05) -> dict:
    """{"baseline": the undefended model's scores, "clean_size": rows the defender holds, "defenses": one record
    per (name, params) in specs}: each defense applied to the poisoned model/data and scored. A defense that
    refuses this model or data (a one-line poisonlab error) gets a record with "refused": the reason, and no
    scores; the others still run."""
    clean = defender_clean_set(poisoned, mask, clean_fraction, seed)
    trig, target, true_labels = triggered_test_set(poisons, test_set, seed)
    baseline = backdoor_scores(Defended(model), test_set, trig, target, true_labels)
    records = []
    for name, params in specs:
        defense = DEFENSES.get(name, **params)
        started = time.perf_counter()
        progress.step(f"defense {name}: {defense.stage}", last=True)
        with progress.phase(f"defense {name}"):
            try:
                defended = apply_defense(defense, model=model, data=poisoned, clean=clean, build=build,
                                         train_cfg=train_cfg, seed=seed)
            except PoisonlabError as err:  # the defense refuses this model or data (e.g. DP-SGD and batch norm)
                progress.warn(f"defense {name} refused: {err}")
                records.append({"defense": name, "params": params, "stage": defense.stage, "refused": str(err),
                                "wall_time": time.perf_counter() - started})
                continue
            scores = backdoor_scores(defended, test_set, trig, target, true_labels)
        took = time.perf_counter() - started
        records.append(defense_record(name, params, defense, defended, scores, baseline, took))
        progress.step(f"defense {name}: clean acc. {100 * scores.clean_accuracy:.1f}%"
                      + (f", ASR {100 * scores.attack_success_rate:.1f}%" if scores.attack_success_rate is not None else "")
                      + f" ({progress.duration(took)})", last=True)
    return {"baseline": baseline.to_dict(), "clean_size": len(clean), "defenses": records}
