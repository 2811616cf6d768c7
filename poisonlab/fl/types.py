"""The contracts of the federated hot path, shared by the engine, attacks, aggregators and Flower.

The k sampled clients' updates are one (k, d) float32 tensor (update = local model minus
global model, flattened). An update attack rewrites the malicious rows of it; an aggregator
reduces it to (d,). Nothing in that path loops over clients in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class Aggregate:
    """An aggregator's answer: the aggregated update (d,), which rows it kept, optional per-row scores.

    selected: bool (k,), True for rows that contributed (or were not flagged).
    scores: float (k,) or None; higher means more suspicious where the rule has a notion of it,
    otherwise the rule's own per-row quantity (documented by each rule).
    info: small JSON-able extras (e.g. clipping factors, cluster ids) for the report.
    state: a stateful rule's new state (tensors and JSON-able values, flat string keys), None if stateless.
    """

    update: torch.Tensor
    selected: torch.Tensor
    scores: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    state: dict | None = None


@dataclass(frozen=True)
class RoundContext:
    """What a rule or an attack may know about the round.

    round: 0-based round index; num_clients: K in the federation; sampled: ids (k,) of the
    rows' clients; global_params: flat (d,) global model before the round; server_lr: eta;
    malicious: bool (k,) truth, for attacks and for scoring defenses (never used by a rule to decide);
    seed: experiment seed for derived generators; extras: rule-specific inputs, by key:
      "server_update": FLTrust's g0, the server's own update (d,) on its root data this round;
      "validate": callable((m, d) candidate updates) -> (m,) accuracies of the model
                  global + server_lr * update on the server's held-out set;
      "base_accuracy": accuracy of the current global model on that held-out set.
    state: the state this rule returned in the previous round (Aggregate.state); None at the start.
    """

    round: int = 0
    num_clients: int = 0
    sampled: torch.Tensor | None = None
    global_params: torch.Tensor | None = None
    server_lr: float = 1.0
    malicious: torch.Tensor | None = None
    omniscient: bool = True
    seed: int = 0
    extras: dict = field(default_factory=dict)
    state: dict | None = None


class Aggregator(Protocol):
    """agg(updates (k, d), weights (k,), ctx) -> Aggregate. Weights are non-negative, not necessarily normalised."""

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate: ...


class UpdateAttack(Protocol):
    """attack(updates (k, d), malicious bool (k,), ctx) -> (k, d) with only the malicious rows rewritten."""

    def __call__(self, updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor: ...


@dataclass(frozen=True)
class Schedule:
    """When an adversary acts: rounds start <= r < end (end None = forever) with (r - start) % every == 0,
    or exactly the listed rounds when rounds is given (single shot: rounds=(r,))."""

    start: int = 0
    end: int | None = None
    every: int = 1
    rounds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from poisonlab.errors import ConfigError

        if self.start < 0 or self.every < 1 or (self.end is not None and self.end < self.start):
            raise ConfigError(f"schedule start={self.start}, end={self.end}, every={self.every} is invalid;"
                              " accepted: start >= 0, every >= 1, end >= start or null")
        if self.rounds is not None:
            object.__setattr__(self, "rounds", tuple(int(r) for r in self.rounds))

    def active(self, round: int) -> bool:
        """True if the adversary acts in this 0-based round."""
        if self.rounds is not None:
            return round in self.rounds
        in_window = round >= self.start and (self.end is None or round < self.end)
        return in_window and (round - self.start) % self.every == 0

    def last_round(self) -> int | None:
        """The last round in which it acts (None if it never stops)."""
        if self.rounds is not None:
            return max(self.rounds) if self.rounds else None
        if self.end is None:
            return None
        return self.start + ((self.end - 1 - self.start) // self.every) * self.every
