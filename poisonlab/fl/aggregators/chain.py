"""``chain(step, ..., rule)``: compose row transforms (clipping, filters) with a final reducer, like optax.

Each transform rewrites rows (norm_clip), or drops them (nonfinite, validation); the rows it
keeps, with their rewritten values and weights, feed the next step; the last step reduces.
``selected`` is the AND of every step's mask (a dropped row is not selected); ``scores`` are
the reducer's (or the last transform's), with +inf for rows dropped before the reducer.
A chain always starts with a non-finite guard (policy "drop" unless one is given first).
"""

from __future__ import annotations

import dataclasses

import torch

from poisonlab.fl.aggregators.base import check_updates, empty
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.fl.aggregators.base import subset_context


class Chain:
    """Transforms then a reducer, as one rule; stateful steps' states are kept under their index."""

    def __init__(self, steps: list):
        self.steps = list(steps)

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.steps))})"

    def check_rows(self, n: int) -> None:
        """The reducer's check_rows(n), if it has one: transforms only ever remove rows, so a reducer that
        cannot aggregate n rows cannot aggregate what is left of them either."""
        check = getattr(self.steps[-1], "check_rows", None)
        if check is not None:
            check(n)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        check_updates(updates, weights)
        k = updates.shape[0]
        rows = torch.arange(k)
        selected = torch.ones(k, dtype=torch.bool)
        scores: torch.Tensor | None = None
        info: dict = {}
        x, w, c = updates, weights, ctx
        for step in self.steps[:-1]:
            t = step.transform(x, w, c)
            selected[rows] &= t.selected & t.keep
            scores = _merge_scores(scores, t.scores, rows, k)
            info.update(t.info)
            x, w = t.updates, t.weights
            if not bool(t.keep.all()):
                if scores is not None:
                    scores[rows[~t.keep]] = float("inf")
                rows, x, w, c = rows[t.keep], x[t.keep], w[t.keep], subset_context(c, t.keep)
                c = dataclasses.replace(c, extras={**c.extras, "rows_dropped": k - rows.numel()})
            if rows.numel() == 0:
                answer = empty(updates, info)
                return Aggregate(answer.update, answer.selected, scores, answer.info)
        agg = self.steps[-1](x, w, c)
        selected[rows] &= agg.selected
        scores = _merge_scores(scores, agg.scores, rows, k)
        if scores is not None and rows.numel() < k:
            dropped = torch.ones(k, dtype=torch.bool)
            dropped[rows] = False
            scores[dropped] = float("inf")
        return Aggregate(agg.update, selected, scores, {**info, **agg.info})

    def transform(self, updates, weights, ctx):
        """A chain whose last step is also a transform is itself a transform (steps applied in order)."""
        from poisonlab.fl.aggregators.base import Transformed

        k = updates.shape[0]
        keep = torch.ones(k, dtype=torch.bool)
        selected = torch.ones(k, dtype=torch.bool)
        x, w = updates.clone(), weights.clone()
        rows = torch.arange(k)
        info: dict = {}
        for step in self.steps:
            t = step.transform(x[rows], w[rows], subset_context(ctx, keep) if not keep.all() else ctx)
            x[rows], w[rows] = t.updates, t.weights
            selected[rows] &= t.selected & t.keep
            keep[rows[~t.keep]] = False
            rows = rows[t.keep]
            info.update(t.info)
        return Transformed(x, w, keep, selected, None, info)

    def state_dict(self) -> dict:
        """States of the stateful steps, keyed 'index.name'."""
        out = {}
        for i, step in enumerate(self.steps):
            if hasattr(step, "state_dict"):
                out.update({f"{i}.{key}": v for key, v in step.state_dict().items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        for i, step in enumerate(self.steps):
            if hasattr(step, "load_state_dict"):
                prefix = f"{i}."
                step.load_state_dict({key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)})


def _merge_scores(scores, new, rows, k):
    """Scatter a step's (len(rows),) scores into the (k,) vector (later steps overwrite)."""
    if new is None:
        return scores
    if scores is None:
        scores = torch.full((k,), float("nan"))
    scores[rows] = new.to(scores.dtype)
    return scores


def chain(*steps, nonfinite: str | None = None) -> Chain:
    """Compose transforms and a final rule: ``chain(norm_clip(5.0), trimmed_mean(beta=0.1))``.

    Nested chains are flattened. A non-finite guard is put first (policy nonfinite, default
    "drop") unless the first step already is one; later guards are dropped.
    """
    from poisonlab.fl.aggregators.nonfinite import NonFinite, nonfinite_guard

    if not steps:
        raise ValueError("chain needs at least one rule")
    flat = []
    for step in steps:
        flat.extend(step.steps if isinstance(step, Chain) else [step])
    for step in flat[:-1]:
        if not hasattr(step, "transform"):
            raise TypeError(f"chain: {step!r} is a reducer; only the last step may reduce"
                            " (transforms: norm_clip, nonfinite, validation)")
    guard = flat[0] if isinstance(flat[0], NonFinite) else nonfinite_guard(nonfinite or "drop")
    if nonfinite is not None and guard.policy != nonfinite:
        guard = nonfinite_guard(nonfinite)
    rest = [s for s in flat if not isinstance(s, NonFinite)]
    if not rest:
        raise ValueError("chain needs a rule after the non-finite guard")
    return Chain([guard, *rest])
