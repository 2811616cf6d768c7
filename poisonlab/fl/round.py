"""The server half of one federated round, as pure steps shared by the built-in engine and Flower.

    sampled = sample_clients(K, sample, seed, round, forced)          # who takes part
    updates = apply_adversaries(updates, masks, adversaries, ctx)     # boost, then update attack
    new, agg, applied = aggregate_and_apply(rule, updates, weights, ctx, global_params, server_lr)
    record = round_record(round, sampled, malicious, updates, agg, applied)

``Federation.round`` (fl/federation.py) is this sequence around the engine's local training;
the Flower ``RobustStrategy`` (flower/strategy.py) samples and aggregates with the same steps and
each ClientApp applies its adversary with ``apply_adversaries`` to its own row, so both engines
round the sample size, order the attacks and treat a non-finite aggregate the same way.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.history import RoundRecord, flag_quality
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator


def sample_size(sample: float | int, num_clients: int) -> int:
    """Clients drawn per round: a fraction of K (max(1, round(sample * K)), Python's round) or a count; at most K.

    Python's round is round-half-to-even: 0.25 x 10 clients gives 2, 0.5 x 5 gives 2.
    """
    if isinstance(sample, bool) or not isinstance(sample, numbers.Real) or sample <= 0:
        raise ConfigError(f"sample={sample!r} is invalid; accepted: a fraction in (0, 1] or a count >= 1")
    m = max(1, round(sample * num_clients)) if isinstance(sample, float) else int(sample)
    return min(m, num_clients)


def sample_clients(num_clients: int, sample: float | int, seed: int, round: int,
                   forced: Sequence[int] = ()) -> torch.Tensor:
    """Sorted client ids (long) of the round: the forced ids plus a draw from generator(seed, "sample", round).

    The draw is one permutation of the K clients; the forced ids are taken out of it and the first
    sample_size - len(forced) of the rest join them (all forced ids are kept even beyond the size).
    """
    order = torch.randperm(num_clients, generator=generator(seed, "sample", round), device="cpu")
    if forced:
        order = order[~torch.isin(order, torch.tensor(forced, device="cpu"))]
    rest = order[: max(0, sample_size(sample, num_clients) - len(forced))]
    return torch.cat([torch.tensor(forced, dtype=torch.long, device="cpu"), rest]).sort().values


def apply_adversaries(updates: torch.Tensor, masks: Sequence[torch.Tensor], adversaries: Sequence,
                      ctx: RoundContext, states: dict | None = None) -> torch.Tensor:
    """Each adversary with rows this round, in order: its rows times its boost, then its update attack.

    masks[i]: bool (k,), the rows adversary i controls and acts on this round. The boost is applied
    in place on updates; an attack returns a new matrix. An adversary with omniscient=False gets
    ctx with omniscient=False (it estimates from its own rows).
    states: the stateful attacks' states by adversary index, kept by the caller between rounds: adversary
    i's attack gets ctx.attack_state = states.get(i) and states[i] is replaced by its next_state. None (an
    engine that keeps no attack state): a stateful attack is refused with a ConfigError.
    """
    for i, (adversary, rows) in enumerate(zip(adversaries, masks)):
        if rows.any() and adversary.boost not in (None, 1.0):  # 1.0: no boost
            updates[rows] *= adversary.boost
        if rows.any() and adversary.attack is not None:
            stateful = getattr(adversary.attack, "next_state", None)
            if stateful is not None and states is None:
                raise ConfigError(f"adversary '{adversary.name}': its attack keeps state across rounds, which this"
                                  " engine does not carry; accepted: the built-in federated engine")
            view = ctx if adversary.omniscient else dataclasses.replace(ctx, omniscient=False)
            if stateful is not None:
                view = dataclasses.replace(view, attack_state=states.get(i))
            before, updates = updates, adversary.attack(updates, rows, view)
            if stateful is not None:
                states[i] = stateful(before, updates, rows, view)
    return updates


def aggregate_and_apply(rule: Callable[..., Aggregate], updates: torch.Tensor, weights: torch.Tensor,
                        ctx: RoundContext, global_params: torch.Tensor,
                        server_lr: float) -> tuple[torch.Tensor, Aggregate, bool]:
    """Aggregate with the rule and apply with the server learning rate: (new global params, agg, applied).

    agg = rule(updates, weights, ctx); new = global_params + server_lr * agg.update.

    The non-finite rule of both engines: when the new global model would hold a NaN or Inf (a
    non-finite aggregate, or a finite one that overflows when applied) the round is not applied
    and the global model is kept (applied=False); a global model is therefore never non-finite.
    """
    agg = rule(updates, weights, ctx)
    new = global_params + server_lr * agg.update.to(global_params.dtype)
    applied = bool(torch.isfinite(new).all())
    return (new if applied else global_params), agg, applied


def flags(sampled: torch.Tensor, agg: Aggregate) -> torch.Tensor:
    """bool (k,): the rows the rule flagged: its own info["flagged"] client ids if given, else the rows not selected."""
    if "flagged" in (agg.info or {}):
        return torch.isin(sampled, torch.as_tensor(agg.info["flagged"], dtype=torch.long, device=sampled.device))
    return ~torch.as_tensor(agg.selected, dtype=torch.bool, device=sampled.device)


def round_record(round: int, sampled: torch.Tensor, malicious: torch.Tensor, updates: torch.Tensor,
                 agg: Aggregate, applied: bool) -> RoundRecord:
    """The round's RoundRecord (no evaluation): ids of the sampled / malicious / selected / flagged rows,
    the rows' update norms, and the flags' precision and recall against the truly malicious rows.

    sampled: client ids (k,) of the rows of updates; malicious: bool (k,) truth.
    """
    selected = torch.as_tensor(agg.selected, dtype=torch.bool, device=sampled.device)
    flagged = flags(sampled, agg)
    precision, recall = flag_quality(flagged, malicious)
    return RoundRecord(round=round, sampled=sampled.tolist(), malicious=sampled[malicious].tolist(),
                       selected=sampled[selected].tolist(), flagged=sampled[flagged].tolist(),
                       update_norms=updates.norm(dim=1).tolist(), precision=precision, recall=recall,
                       applied=applied)
