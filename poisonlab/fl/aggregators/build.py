"""A configured aggregator: the rule(s) a config names, after the non-finite guard the config chooses.

A config's aggregator (``{name: median, params: {nonfinite: zero}}``, or a list of such steps) is
``chain(nonfinite_guard(policy), rule, ...)``: ``nonfinite`` ('drop' by default, 'zero' or 'error')
is the guard's parameter, taken from the first step (as the single guard of a chain always was);
every other parameter is the rule's. ``get(name, **params)`` stays the bare rule.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from poisonlab.fl.aggregators.base import Rule
from poisonlab.fl.aggregators.chain import chain
from poisonlab.fl.aggregators.nonfinite import nonfinite_guard
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.registry import check_params

NONFINITE = inspect.Parameter("nonfinite", inspect.Parameter.KEYWORD_ONLY, default="drop")


def check_rule_params(name: str, params: dict | None = None) -> None:
    """ConfigError for an unknown rule name or a parameter neither the rule nor the guard ('nonfinite') takes."""
    check_params(f"aggregator '{name}'", AGGREGATORS.entry(name).factory, params or {}, extra=(NONFINITE,))


def build_rule(name: str, params: dict | None = None) -> Rule:
    """chain(nonfinite_guard(params['nonfinite'] or 'drop'), get(name, **other params))."""
    return build_chain([(name, params)])


def build_chain(steps: Iterable[tuple[str, dict | None]]) -> Rule:
    """chain(nonfinite_guard(policy), rule_1, ..., rule_n) for (name, params) steps; policy is the first step's
    'nonfinite' ('drop' if absent); the other steps' policies are checked, not used."""
    rules, policies = [], []
    for name, params in steps:
        check_rule_params(name, params)
        params = dict(params or {})
        policies.append(nonfinite_guard(params.pop("nonfinite", "drop")))
        rules.append(AGGREGATORS.get(name, **params))
    if not rules:
        raise ValueError("build_chain needs at least one rule")
    return chain(policies[0], *rules)
