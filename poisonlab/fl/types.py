"""The contracts of the federated hot path, shared by the engine, attacks, aggregators and Flower.

The k sampled clients' updates are one (k, d) float32 tensor (update = local model minus
global model, flattened). An update attack rewrites the malicious rows of it; an aggregator
reduces it to (d,). Nothing in that path loops over clients in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from poisonlab.config.schedule import Schedule  # noqa: F401  (defined once, with the YAML's adversary.schedule)


@dataclass(frozen=True)
class Aggregate:
    """An aggregator's answer: the aggregated update (d,), which rows it kept, optional per-row scores.

    selected: bool (k,), True for rows that contributed (or were not flagged).
    scores: float (k,) or None; higher means more suspicious where the rule has a notion of it,
    otherwise the rule's own per-row quantity (documented by each rule).
    info: small JSON-able extras (e.g. clipping factors, cluster ids) for the report.
    state: the rule's state for the next round (flat string keys; tensors and JSON-able values),
    None for a stateless rule; the engine passes it back as RoundContext.state.

    A step that rewrites or filters rows for the next step of a chain (clipping, the non-finite
    guard, validation) also says what it passes on: rows (k, d) rewritten rows (None: the input
    rows), scale (k,) factors the next step's rows are multiplied by (None: 1; a clipping step alone
    then never materialises a clipped copy), keep bool (k,) rows passed on (None: all). A step that
    regroups rows (bucketing: m bucket means from k rows) passes on rows (m, d) with weights (m,) (None:
    the input weights; rows are then no longer clients). Such a step may leave update None: called alone, its answer is the weighted mean of the rows it passes on
    (fl.aggregators.base.Rule fills it in).
    """

    update: torch.Tensor | None
    selected: torch.Tensor
    scores: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    state: dict | None = None
    rows: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    weights: torch.Tensor | None = None


@dataclass(frozen=True)
class RoundContext:
    """What a rule or an attack may know about the round.

    round: 0-based round index; num_clients: K in the federation; sampled: ids (k,) of the
    rows' clients; global_params: flat (d,) global model before the round; server_lr: eta;
    malicious: bool (k,) truth, for attacks and for scoring defenses (never used by a rule to decide);
    omniscient: whether an attack may read the honest rows (else it estimates from its own rows);
    seed: experiment seed for derived generators; extras: rule-specific inputs, by key:
      "server_update": FLTrust's g0, the server's own update (d,) on its root data this round;
      "validate": callable((m, d) candidate updates) -> (m,) accuracies of the model
                  global + server_lr * update on the server's held-out set;
      "base_accuracy": accuracy of the current global model on that held-out set.
    state: the state this rule returned (Aggregate.state) in the previous round; None at the start.
    attack_state: for a stateful update attack (one with a next_state method, see UpdateAttack), the
    state its next_state returned the last round it ran; None at the start (and for every other attack).
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
    attack_state: dict | None = None


class Aggregator(Protocol):
    """agg(updates (k, d), weights (k,), ctx=None) -> Aggregate. Weights are non-negative, not necessarily
    normalised; ctx None means a default context (round 0, rows are clients 0..k-1, seed 0).

    check_rows(n): ConfigError unless a round of n rows can be aggregated (Krum: n > 2f + 2, ...).
    memory_parts(k, d, clients): the temporaries of one call by name (bytes), for the resource estimate.
    """

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor,
                 ctx: RoundContext | None = None) -> Aggregate: ...

    def check_rows(self, n: int) -> None: ...

    def memory_parts(self, k: int, d: int, clients: int = 0) -> dict[str, int]: ...


class UpdateAttack(Protocol):
    """attack(updates (k, d), malicious bool (k,), ctx) -> (k, d) with only the malicious rows rewritten.

    A stateful attack (stale updates, 3DFed's feedback) also has next_state(before, after, malicious, ctx)
    -> dict (flat string keys; tensors and JSON-able values): its state for the next round it runs, from the
    round's rows before and after the attack. The engine keeps it per adversary and passes it back as
    ctx.attack_state (fl/round.py apply_adversaries), and checkpoints it with the global model.
    """

    def __call__(self, updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor: ...
