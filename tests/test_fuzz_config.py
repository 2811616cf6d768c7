"""A schema-driven fuzzer of experiment configs (hypothesis): every field of the pydantic schema, one at a time.

The fields are found by walking poisonlab.config.schema.ExperimentConfig (nested sections included) with
their declared bounds (Field(ge=..., lt=...)). For a field, hypothesis draws a value from: values inside
its bounds, its boundary values and their neighbours, NaN and +-Inf, huge and negative numbers, wrong
types (text, bools, lists, mappings, None), huge strings and strings with NUL, deep nesting. The value
is set into a tiny experiment (digits, logistic regression; federated for `federated.*` fields,
centralized otherwise), written as YAML and put through what `poisonlab run` does: load_config (YAML
reader, schema, component checks), then one round of the experiment (epochs and rounds capped at 1 so
every example takes about a second; the uncapped value was still what the config check saw).

The contract: the config is accepted and the run finishes, or it is refused with poisonlab's own error
(a PoisonlabError) in one line. Any other exception fails, and so does an example that takes longer
than TIME_LIMIT seconds (a hang), via SIGALRM.

`make test` runs a bounded number of examples (derandomized, so the same ones every time). A longer
run, e.g. before a release:

    POISONLAB_FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest tests/test_fuzz_config.py -p no:randomly
"""

from __future__ import annotations

import copy
import math
import os
import signal
import types
import typing
from pathlib import Path

import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from poisonlab.config.base import model_in
from poisonlab.config.load import load_config, set_path
from poisonlab.config.schema import ExperimentConfig
from poisonlab.errors import PoisonlabError

EXAMPLES = int(os.environ.get("POISONLAB_FUZZ_EXAMPLES", "25"))
TIME_LIMIT = 60
"""Seconds one example may take (config loading plus one capped round) before it counts as a hang."""

FEDERATED = {"name": "fuzz", "seed": 0, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
             "federated": {"clients": 4, "rounds": 1, "local": {"epochs": 1, "batch_size": 64, "lr": 0.05},
                           "aggregator": {"name": "mean"}},
             "output": {"report": False}}
CENTRALIZED = {"name": "fuzz", "seed": 0, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
               "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}, "output": {"report": False}}
CAPS = {"federated.rounds": 1, "federated.local.epochs": 1, "train.epochs": 1, "injection.epochs": 1}
"""Applied to an accepted config before its one-round run, so that a valid 100000-epoch value costs 1."""


# ---------------------------------------------------------------- the schema's fields
def schema_fields(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, typing.Any, dict]]:
    """(dotted path, annotation, bounds) of every field below model, sections included and recursed into."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata
                  if isinstance(m, (Ge, Gt, Le, Lt))}
        out.append((path, field.annotation, bounds))
        inner = model_in(field.annotation)
        if inner is not None:
            out += schema_fields(inner, f"{path}.")
    return out


FIELDS = schema_fields()


def kinds(annotation) -> set[str]:
    """The plain kinds in an annotation: 'int', 'float', 'str', 'bool', 'literal', 'model', 'other'."""
    found = set()
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {"literal"}
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        for arg in args:
            found |= kinds(arg)
        return found
    for kind in (bool, int, float, str):
        if annotation is kind:
            return {kind.__name__}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"model"}
    return {"other"} if annotation is not type(None) else set()


# ---------------------------------------------------------------- values
def json_like(depth: int = 3) -> st.SearchStrategy:
    """Any YAML-able value: scalars of every kind, nested lists and mappings."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                        st.text(max_size=12), st.sampled_from(["", "\x00", "mean", "krum", "cnn", "digits"]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                        max_leaves=depth * 4)


def hostile() -> st.SearchStrategy:
    """What every field also gets: non-finite and huge numbers, wrong types, huge and NUL strings, nesting."""
    return st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, -0.0, 1e308, -1e308, 5e-324, 10**18, -10**18,
                         2**63, 10**29, True, False, None, "", "nan", "inf", "1e999", "x" * 5000, "a\x00b",
                         [], {}, [[[[]]]], {"a": {"b": {"c": {}}}}]),
        json_like())


def field_values(annotation, bounds: dict) -> st.SearchStrategy:
    """Valid, boundary and hostile values for a field of this annotation and bounds."""
    kind = kinds(annotation)
    options = [hostile()]
    low = bounds.get("Ge", bounds.get("Gt"))
    high = bounds.get("Le", bounds.get("Lt"))
    edges = [b for b in (low, high) if b is not None]
    if "int" in kind:
        lo = int(low if low is not None else -1000)
        hi = int(high if high is not None else lo + 1000)
        options += [st.integers(lo, min(hi, lo + 1000)), st.sampled_from([e + s for e in edges for s in (-1, 0, 1)] or [0])]
    if "float" in kind:
        options += [st.floats(low if low is not None else -1e6, high if high is not None else 1e6,
                              allow_nan=False, allow_infinity=False),
                    st.sampled_from([e + s for e in edges for s in (-1e-9, 0.0, 1e-9)] or [0.0])]
    if "bool" in kind:
        options.append(st.booleans())
    if "str" in kind:
        options.append(st.text(max_size=40))
    if "literal" in kind:
        options.append(st.sampled_from(typing.get_args(annotation)))
    return st.one_of(*options)


@st.composite
def fuzzed_configs(draw) -> tuple[str, object, dict]:
    """(field path, value, document): one field of the schema set to a drawn value in a tiny experiment."""
    path, annotation, bounds = draw(st.sampled_from(FIELDS))
    value = draw(field_values(annotation, bounds))
    doc = copy.deepcopy(FEDERATED if path.startswith("federated") else CENTRALIZED)
    try:
        set_path(doc, path, value)
    except PoisonlabError:  # the path crosses a value: nothing to fuzz here
        return path, value, doc
    return path, value, doc


# ---------------------------------------------------------------- the run
class Hang(Exception):
    """An example took longer than TIME_LIMIT seconds."""


def _alarm(signum, frame):
    raise Hang(f"over {TIME_LIMIT} s")


def load_and_run(doc: dict, tmp: Path) -> None:
    """What `poisonlab run` does with the document: load_config from YAML, then one capped round."""
    from poisonlab.experiment import run_experiment

    path = tmp / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    load_config(path)  # the uncapped document: the schema and component checks see the drawn value
    capped = copy.deepcopy(doc)
    for key, cap in CAPS.items():
        node = capped
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), int):
            node[parts[-1]] = min(node[parts[-1]], cap)
    path.write_text(yaml.safe_dump(capped, sort_keys=False, allow_unicode=True))
    run_experiment(load_config(path), None, quiet=True)


def check_contract(doc: dict, tmp: Path) -> str:
    """'accepted' or 'refused'; raises for any other outcome (another exception, a multi-line message, a hang)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT)
    try:
        load_and_run(doc, tmp)
        return "accepted"
    except PoisonlabError as err:
        assert "\n" not in str(err), f"a multi-line message: {err}"
        assert str(err), "an empty message"
        return "refused"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_schema_has_fields_of_every_kind():
    """The walk finds the nested sections' fields and their bounds (else the fuzzer would fuzz little)."""
    paths = {p: b for p, _, b in FIELDS}
    assert {"federated.local.lr", "federated.adversary.schedule.every", "train.momentum", "data.test_fraction",
            "federated.server_data.root_size", "injection.clean_fraction", "output.report"} <= set(paths)
    assert paths["federated.local.momentum"] == {"Ge": 0.0, "Lt": 1.0}
    assert len(FIELDS) >= 50


@pytest.mark.parametrize("doc", [FEDERATED, CENTRALIZED], ids=["federated", "centralized"])
def test_the_base_experiments_run(doc, tmp_path: Path):
    assert check_contract(copy.deepcopy(doc), tmp_path) == "accepted"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=fuzzed_configs())
def test_a_fuzzed_field_is_accepted_or_refused_in_one_line(case, tmp_path_factory):
    path, value, doc = case
    tmp = tmp_path_factory.mktemp("fuzz")
    check_contract(doc, tmp)


@pytest.mark.parametrize("path,value", [
    ("federated.local.lr", math.nan), ("federated.sample", math.inf), ("federated.clients", 10**18),
    ("federated.adversary.schedule.rounds", [10**18]), ("federated.adversary.clients", [0, 0, 1]),
    ("federated.aggregator", [{"name": "norm_clip", "params": {"bound": math.inf}}]),
    ("train.batch_size", 10**18), ("data.params", {"n": 1e308}), ("model.params", {"hidden": [[[]]]}),
    ("grid", {"seed": [1]}), ("federated.adversary.schedule.end", 0), ("federated.partition", {"name": "\x00"}),
    ("federated.eval_every", 10**9), ("name", "x" * 4000), ("seed", -(10**29)),
    ("federated.aggregator", []),  # found by the fuzzer: ValueError 'build_chain needs at least one rule'
])
def test_known_hard_values(path, value, tmp_path: Path):
    """Values the fuzzer (or the review) found hard, kept as fixed regression examples."""
    doc = copy.deepcopy(FEDERATED if path.startswith("federated") else CENTRALIZED)
    set_path(doc, path, value)
    assert check_contract(doc, tmp_path) in ("accepted", "refused")
