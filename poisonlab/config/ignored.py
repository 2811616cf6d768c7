"""Settings that would have no effect in the chosen mode: an error where the user clearly expects an
effect that cannot happen, a warning line where the run is still meaningful.

- ``check_resume(config, resume, engine)``: ``--resume`` that cannot resume (a centralized config) is a
  ConfigError (both engines resume federated runs: the Flower one from its server-side checkpoints);
- ``ignored_settings(config, resume=..., command=...)``: one warning line per setting that a run of
  this config never reads (sections of the other mode, server data no rule uses, a sample larger than
  the federation, a grid in ``poisonlab run``);
- ``never_firing_adversaries(config)``: the lines for adversaries whose schedule has no active round
  within the configured rounds; run_experiment prints them at the start, stores them in metrics.json
  ``warnings`` and the run report shows them as a banner (``--resume`` without checkpoints is warned there too).

Warnings are printed by the commands as ``poisonlab: warning: ...`` on stderr (``warn``).
"""

from __future__ import annotations

import sys

from poisonlab.config.schema import ExperimentConfig, Injection
from poisonlab.config.train import TrainConfig
from poisonlab.errors import ConfigError

FINE_TUNE_ONLY = ("clean_fraction", "epochs", "lr", "batch_size", "momentum", "head_only", "feature_layer")
"""Injection settings that only mode fine_tune reads."""
SERVER_DATA_USERS = {"root_size": ("fltrust", "monna"), "validation_size": ("validation",)}
"""Which aggregators read each server data set (federated.server_data)."""


def check_resume(config: ExperimentConfig, resume: bool, engine: str = "builtin") -> None:
    """ConfigError for a --resume that no engine can honour for this config."""
    if not resume:
        return
    if config.kind != "federated":
        raise ConfigError("--resume continues a federated run from its checkpoints; a centralized config has"
                          " none; accepted: --resume with a 'federated' section and federated.checkpoint_every >= 1")


def never_firing_adversaries(config: ExperimentConfig) -> list[str]:
    """A line per adversary whose schedule is active in none of rounds 0..rounds-1 (so it never attacks)."""
    fed = config.federated
    if fed is None:
        return []
    lines = []
    many = isinstance(fed.adversary, list)
    for i, adv in enumerate(fed.adversaries()):
        if not adv.clients:  # 0, 0.0 or []: an adversary of no clients has nothing to fire
            continue
        if not any(adv.schedule.active(r) for r in _candidate_rounds(adv.schedule, fed.rounds)):
            where = f"federated.adversary.{i}" if many else "federated.adversary"
            lines.append(f"{where}.schedule never fires within the {fed.rounds} configured rounds (0..{fed.rounds - 1})"
                         f" ({_describe(adv.schedule)}); the run has no attack")
    return lines


def _candidate_rounds(schedule, rounds: int) -> range | list[int]:
    """The rounds worth testing for activity: the listed ones, or the first `every` rounds from start."""
    if schedule.rounds is not None:
        return [r for r in schedule.rounds if 0 <= r < rounds]
    return range(schedule.start, min(rounds, schedule.start + schedule.every))


def _describe(schedule) -> str:
    if schedule.rounds is not None:
        return f"rounds={list(schedule.rounds)[:5]}"
    return f"start={schedule.start}, end={schedule.end}, every={schedule.every}"


def ignored_settings(config: ExperimentConfig, *, resume: bool = False, command: str = "run") -> list[str]:
    """Warning lines for settings this run never reads (see the module docstring)."""
    lines = []
    if config.grid and command == "run":
        lines.append("grid: 'poisonlab run' runs the base config once and ignores the grid; accepted: 'poisonlab sweep'")
    fed = config.federated
    if fed is None:
        if config.injection.mode == "concat":
            unread = [k for k in FINE_TUNE_ONLY if getattr(config.injection, k) != getattr(Injection(), k)]
            if unread:
                lines.append(f"injection.{', injection.'.join(unread)}: read only by mode fine_tune; mode is concat")
        return lines
    for key, default in (("train", TrainConfig()), ("injection", Injection())):
        if getattr(config, key) != default:
            lines.append(f"{key}: a federated run does not read it (clients train with federated.local)")
    if config.poison:
        lines.append("poison: a federated run does not read it; accepted: federated.adversary.poison")
    if config.detect:
        lines.append("detect: a federated run does not run detectors; accepted: a centralized config or"
                     " 'poisonlab scan'")
    rules = {c.name for c in fed.aggregator_chain()}
    for key, users in SERVER_DATA_USERS.items():
        if getattr(fed.server_data, key) and not rules & set(users):
            lines.append(f"federated.server_data.{key}: no aggregator of this run reads it ({', '.join(users)} do);"
                         " those samples are only taken out of the clients' data")
    if isinstance(fed.sample, int) and fed.sample > fed.clients:
        lines.append(f"federated.sample={fed.sample} is more than the {fed.clients} clients; every client takes part")
    return lines


def warn(lines: list[str]) -> None:
    """Print each line as 'poisonlab: warning: ...' on stderr."""
    for line in lines:
        print(f"poisonlab: warning: {line}", file=sys.stderr)
