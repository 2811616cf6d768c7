"""Robust aggregation rules: ``get(name, **params)`` builds one, ``chain(...)`` composes them.

Every rule maps (updates (k, d), weights (k,), ctx) to an Aggregate(update, selected, scores,
info); see docs/aggregators.md for the catalog (formula, paper, what selected/scores mean).
Rules built by ``get`` (or ``AGGREGATORS.get``) or ``chain`` take ``nonfinite="drop"|"zero"|"error"``
and never let NaN/Inf reach the output; the bare factories (``krum(f=2)``) are the pure math.

    >>> rule = get("trimmed_mean", beta=0.1)
    >>> rule = chain(norm_clip(5.0), trimmed_mean(beta=0.1))
"""

from __future__ import annotations

import inspect

from poisonlab.registry import Registry

AGGREGATORS = Registry("aggregator")


def register(name: str, *, reference: str):
    """Register a rule factory under name; the registered builder adds the ``nonfinite`` policy."""
    from poisonlab.fl.aggregators.base import with_signature
    from poisonlab.fl.aggregators.chain import chain

    def wrap(factory):
        extra = [inspect.Parameter("nonfinite", inspect.Parameter.KEYWORD_ONLY, default="drop")]

        @with_signature(factory, extra)
        def build(*args, nonfinite: str = "drop", **params):
            return chain(factory(*args, **params), nonfinite=nonfinite)

        AGGREGATORS.register(name, reference=reference)(build)
        return factory

    return wrap


def get(name: str, **params):
    """Build the named rule with its parameters (plus nonfinite='drop'|'zero'|'error')."""
    return AGGREGATORS.get(name, **params)


from poisonlab.fl.aggregators.chain import Chain, chain  # noqa: E402
from poisonlab.fl.aggregators.nonfinite import nonfinite_guard  # noqa: E402
from poisonlab.fl.aggregators.mean import mean  # noqa: E402
from poisonlab.fl.aggregators.median import median, trimmed_mean  # noqa: E402
from poisonlab.fl.aggregators.krum import krum, multi_krum, pairwise_sq_distances  # noqa: E402
from poisonlab.fl.aggregators.clipping import dp_gaussian, norm_clip  # noqa: E402
from poisonlab.fl.aggregators.bulyan import bulyan  # noqa: E402
from poisonlab.fl.aggregators.geometric_median import geometric_median  # noqa: E402
from poisonlab.fl.aggregators.centered_clipping import centered_clipping  # noqa: E402
from poisonlab.fl.aggregators.fltrust import fltrust  # noqa: E402
from poisonlab.fl.aggregators.foolsgold import foolsgold  # noqa: E402
from poisonlab.fl.aggregators.flame import flame  # noqa: E402
from poisonlab.fl.aggregators.validation import validation  # noqa: E402

__all__ = ["AGGREGATORS", "Chain", "bulyan", "centered_clipping", "chain", "dp_gaussian", "flame", "fltrust",
           "foolsgold", "geometric_median", "get", "krum", "mean", "median", "multi_krum", "nonfinite_guard",
           "norm_clip", "pairwise_sq_distances", "register", "trimmed_mean", "validation"]

import poisonlab.fl.auditing  # noqa: E402,F401  (registers "audited")
