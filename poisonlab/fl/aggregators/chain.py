"""``chain(step, ..., rule)``: compose row-passing steps (clipping, filters) with a final rule, like optax.

Each step but the last passes rows on (Aggregate.rows / scale / keep: rewritten, scaled, dropped);
the rows it keeps, with their values and weights, feed the next step; the last step's update is the
answer. ``selected`` is the AND of every step's mask (a dropped row is not selected); ``scores``
are the last scoring step's, with +inf for rows dropped before it; info is merged in step order.
A round whose rows are all dropped gives a zero update (info 'empty'). Each step's state is kept
under 'i.' (its index) in one flat dict. A step that regroups rows (bucketing: Aggregate.weights set,
m rows from k) ends the client-level bookkeeping: the later steps run on the m groups, their
selected/scores (per group) are reported in info as 'group_selected'/'group_scores', and the
clients' selected/scores are those of the steps up to the regrouping. A chain adds nothing: the non-finite guard is a step
(nonfinite_guard) that a config's builder puts first (fl.aggregators.build).
"""

from __future__ import annotations

import dataclasses

import torch

from poisonlab.fl.aggregators.base import Rule, empty, subset_context
from poisonlab.fl.types import Aggregate, RoundContext


def chain(*steps: Rule) -> Rule:
    """Compose steps and a final rule: ``chain(norm_clip(5.0), trimmed_mean(beta=0.1))``; nested chains are
    flattened. Its row requirement is the last step's (steps only ever remove rows); its memory need
    is every step's (by name)."""
    if not steps:
        raise ValueError("chain needs at least one rule")
    flat = tuple(s for step in steps for s in (step.steps or (step,)))
    for step in flat[:-1]:
        if not step.transform:
            raise TypeError(f"chain: {step!r} is a reducer; only the last step may reduce"
                            " (steps that pass rows on: norm_clip, nonfinite, validation, bucketing, nnm, arc)")

    def memory(k: int, d: int, clients: int) -> dict[str, int]:
        return {name: b for step in flat for name, b in step.memory_parts(k, d, clients).items()}

    def check_rows(n: int) -> None:
        """The last step's requirement on the rows the steps before it pass on (bucketing: the buckets)."""
        for step in flat[:-1]:
            n = step.rows_out(n)
        flat[-1].check_rows(n)

    def rows_out(n: int) -> int:
        for step in flat:
            n = step.rows_out(n)
        return n

    return Rule(lambda x, w, ctx: _run(flat, x, w, ctx), f"chain({', '.join(map(repr, flat))})",
                check_rows=check_rows, memory=memory, transform=flat[-1].transform, steps=flat,
                rows_out=rows_out)


def _run(steps: tuple, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext, first: int = 0) -> Aggregate:
    """The steps from index first on, in order, on the rows each one passes on (see the module docstring)."""
    k = updates.shape[0]
    dev = updates.device
    rows = torch.arange(k, device=dev)
    selected = torch.ones(k, dtype=torch.bool, device=dev)
    scores: torch.Tensor | None = None
    info: dict = {}
    state = dict(ctx.state or {})
    x, w, c = updates, weights, ctx
    for i, step in enumerate(steps[first:-1], start=first):
        t = step.step(x, w, dataclasses.replace(c, state=_substate(ctx.state, i)))
        state = _put_substate(state, i, t.state)
        keep = t.keep if t.keep is not None else torch.ones(len(rows), dtype=torch.bool, device=dev)
        selected[rows] &= t.selected & keep
        scores = _merge_scores(scores, t.scores, rows, k)
        info.update(t.info)
        if t.weights is not None:  # regrouped: the later steps see groups, not clients
            return _after_regrouping(steps, i + 1, t, c, state, selected, scores, info, rows, k)
        x = t.rows if t.rows is not None else x
        if t.scale is not None:
            x = x * t.scale[:, None]
        if not bool(keep.all()):
            if scores is not None:
                scores[rows[~keep]] = float("inf")
            rows, x, w, c = rows[keep], x[keep], w[keep], subset_context(c, keep)
            c = dataclasses.replace(c, extras={**c.extras, "rows_dropped": k - rows.numel()})
        if rows.numel() == 0:
            answer = empty(updates, info)
            return Aggregate(answer.update, answer.selected, scores, answer.info, state or None)
    agg = steps[-1](x, w, dataclasses.replace(c, state=_substate(ctx.state, len(steps) - 1)))
    state = _put_substate(state, len(steps) - 1, agg.state)
    selected[rows] &= agg.selected
    scores = _merge_scores(scores, agg.scores, rows, k)
    if scores is not None and rows.numel() < k:
        dropped = torch.ones(k, dtype=torch.bool, device=dev)
        dropped[rows] = False
        scores[dropped] = float("inf")
    return Aggregate(agg.update, selected, scores, {**info, **agg.info}, state or None)


def _after_regrouping(steps, first, t, c, state, selected, scores, info, rows, k) -> Aggregate:
    """The steps from first on, run on the groups step first - 1 passed on (t.rows, t.weights)."""
    if scores is not None and rows.numel() < k:
        dropped = torch.ones(k, dtype=torch.bool, device=selected.device)
        dropped[rows] = False
        scores[dropped] = float("inf")
    groups = dataclasses.replace(c, sampled=None, malicious=None, state=state or None)
    sub = _run(steps, t.rows, t.weights, groups, first)
    group_info = {"group_selected": torch.as_tensor(sub.selected).tolist()}
    if sub.scores is not None:
        group_info["group_scores"] = sub.scores.tolist()
    return Aggregate(sub.update, selected, scores, {**info, **sub.info, **group_info}, sub.state)


def _substate(state: dict | None, i: int) -> dict | None:
    """Step i's state: the keys under 'i.' with the prefix removed (None if it has none)."""
    prefix = f"{i}."
    sub = {key[len(prefix):]: v for key, v in (state or {}).items() if key.startswith(prefix)}
    return sub or None


def _put_substate(state: dict, i: int, sub: dict | None) -> dict:
    """state with step i's keys replaced by sub (under 'i.')."""
    prefix = f"{i}."
    out = {key: v for key, v in state.items() if not key.startswith(prefix)}
    out.update({f"{prefix}{key}": v for key, v in (sub or {}).items()})
    return out


def _merge_scores(scores, new, rows, k):
    """Scatter a step's (len(rows),) scores into the (k,) vector (later steps overwrite)."""
    if new is None:
        return scores
    if scores is None:
        scores = torch.full((k,), float("nan"), device=new.device)
    scores[rows] = new.to(scores.dtype)
    return scores
