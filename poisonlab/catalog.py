"""Where each kind of component is registered, and each component's parameters, for ``poisonlab list``.

Each registry sits in a module whose package imports every member of that kind, so importing the
module named here gives the complete registry.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from poisonlab.errors import PoisonlabError, recorded_ranges, unknown_name
from poisonlab.registry import Registry

# kind -> (module, registry attribute)
KINDS: dict[str, tuple[str, str]] = {
    "datasets": ("poisonlab.data.registry", "SOURCES"),
    "models": ("poisonlab.models", "MODELS"),
    "triggers": ("poisonlab.poison.registry", "TRIGGERS"),
    "poisons": ("poisonlab.poison.registry", "POISONS"),
    "partitions": ("poisonlab.fl.partition", "PARTITIONS"),
    "attacks": ("poisonlab.fl.attacks", "ATTACKS"),
    "aggregators": ("poisonlab.fl.aggregators", "AGGREGATORS"),
    "detectors": ("poisonlab.detect", "DETECTORS"),
    "defenses": ("poisonlab.defend", "DEFENSES"),
}


def registry(kind: str) -> Registry:
    """The registry for a kind ('datasets', 'models', 'attacks', ...)."""
    if kind not in KINDS:
        raise unknown_name("kind", kind, KINDS)
    module, attr = KINDS[kind]
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------- parameters, for `poisonlab list KIND NAME`
#: kinds whose factories need data or shapes to run (loading a dataset, building a model): their
#: parameters are listed from the signature alone; every other kind is also built once with its defaults.
NOT_BUILT = frozenset({"datasets", "models"})


@dataclass(frozen=True)
class Param:
    """One parameter of a component: its name, default ('required' if none), type and accepted range."""

    name: str
    default: str
    type: str
    accepted: str


def parameters(kind: str, name: str) -> list[Param]:
    """The keyword parameters of a component, from the signature that registry.check_params validates against.

    The accepted range of a parameter is what the component's own checks enforce (errors.check_range and
    the aggregators' check_int / check_positive record what they check): the component is built once
    with its defaults inside errors.recorded_ranges(). A parameter with no range check, a component with
    required parameters, and datasets and models (whose factories need data) show '-': their values are
    checked where they are used.
    """
    entry = registry(kind).entry(name)
    sig = inspect.signature(entry.factory)
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
              and not (kind == "models" and p.name in ("input_shape", "num_classes"))]
    ranges = _ranges(kind, entry.factory, params)
    return [Param(p.name, "required" if p.default is p.empty else _text(p.default),
                  _type(p.annotation), ranges.get(p.name, "-")) for p in params]


def _ranges(kind: str, factory, params: list[inspect.Parameter]) -> dict[str, str]:
    """Parameter name -> accepted range, recorded while the factory runs with its defaults (see parameters)."""
    if kind in NOT_BUILT or any(p.default is p.empty for p in params):
        return {}
    with recorded_ranges() as found:
        try:
            factory()
        except PoisonlabError:  # a default combination the component refuses (e.g. neither rate nor count)
            pass                # the checks that ran before the refusal still count
    names = {p.name for p in params}
    out: dict[str, str] = {}
    for checked, accepted in found:  # a check may name its rule first ("dirichlet alpha")
        key = checked.split()[-1]
        if key in names:
            out.setdefault(key, accepted)
    return out


def _text(value) -> str:
    """A default as a user would write it in YAML-ish text (tuples as lists, None as null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    if repr(value) == "<factory>":  # a dataclass field with default_factory
        return "(built per instance)"
    return str(value)


def _type(annotation) -> str:
    """The annotation as written in the source ('float | None'), or '-' if there is none."""
    if annotation is inspect.Parameter.empty:
        return "-"
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
