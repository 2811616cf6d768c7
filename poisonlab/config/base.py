"""The base of every configuration section: frozen, unknown keys refused, each range declared once.

A section is at the same time a part of the YAML document (config/schema.py nests it; config/load.py
reports a bad value with its key path, e.g. ``federated.local.lr=-0.01: Input should be greater than 0``)
and the runtime object the code is handed (``LocalConfig(lr=0.05)`` in fl/local.py). Its defaults and
ranges are written once, as pydantic ``Field(default, ge=..., lt=...)``. Built from Python, a bad value
raises a one-line ConfigError in the shape of ``errors.check_range`` (``local lr=0 is out of range;
accepted: (0.0, inf)``) instead of pydantic's multi-line ValidationError.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, ClassVar

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, ValidationError

from poisonlab.errors import ConfigError, did_you_mean

RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
MAX_EPOCHS = 100_000
"""Most epochs (centralized, local, fine-tuning) and rounds a config may ask for: more is a typo, not a plan."""


class Section(BaseModel):
    """A frozen, hashable configuration section; unknown keys are errors.

    label: how runtime messages name the section ("local" -> "local lr=0 is out of range; ...").
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    label: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(describe_runtime_error(type(self), most_specific(err.errors()))) from None

    # pydantic calls a model's own __init__ when it validates it nested in a document unless it is marked
    # as the base one; so marked, a YAML section keeps pydantic's error, with its key path, for load.py.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def describe_runtime_error(model: type[BaseModel], error: dict) -> str:
    """One line for a pydantic error of a section built from Python, in check_range's shape."""
    loc = [str(p) for p in error["loc"] if not is_union_tag(p)]
    label = getattr(model, "label", "")
    name = " ".join(p for p in (label, ".".join(loc)) if p)
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        fields = fields_at(model, error["loc"][:-1])
        return f"{name}: unknown key;{did_you_mean(loc[-1], fields)} accepted: {', '.join(sorted(fields))}"
    if error["type"] == "missing":
        return f"{name}: required key is missing"
    if error["type"] in RANGE_ERRORS:
        return f"{name}={value!r} is out of range; accepted: {interval(model, error['loc'])}"
    if error["type"] == "finite_number":
        return f"{name}={value!r}: {error['msg']}; accepted: a finite number (not NaN or Inf)"
    if error["type"] == "literal_error":
        known = sorted(re.findall(r"'([^']*)'", error["ctx"]["expected"]))
        return f"{name} '{value}' is not known; known: {', '.join(known)}"
    message = error["msg"].removeprefix("Value error, ")
    if loc:
        return f"{name}={value!r}: {message}"
    return f"{label}: {message}" if label else message


def interval(model: type[BaseModel], loc: tuple) -> str:
    """The accepted interval of the field at loc, from its Field bounds: '[1, inf)', '[0.0, 1.0)'."""
    field = _field_at(model, loc)
    bounds = {type(m): m for m in (field.metadata if field is not None else [])}
    low = bounds.get(Gt) or bounds.get(Ge)
    high = bounds.get(Lt) or bounds.get(Le)
    lo = f"{'(' if isinstance(low, Gt) else '['}{low.gt if isinstance(low, Gt) else low.ge}" if low else "(-inf"
    hi = f"{high.lt if isinstance(high, Lt) else high.le}{')' if isinstance(high, Lt) else ']'}" if high else "inf)"
    return f"{lo}, {hi}"


def most_specific(errors: list[dict]) -> dict:
    """The error to show: an unknown key first, else the deepest path (the union member that got furthest)."""
    return max(errors, key=lambda e: (e["type"] == "extra_forbidden", e["type"] != "missing", len(e["loc"])))


def is_union_tag(part: Any) -> bool:
    """pydantic inserts the union member's type name in loc (e.g. 'AdversarySpec', 'list[...]'); drop it."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("int", "float", "str", "bool"))


def fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model reached by following loc from root."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or isinstance(part, int) or is_union_tag(part):
            continue
        field = model.model_fields.get(str(part))
        model = model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _field_at(root: type[BaseModel], loc: tuple):
    """The FieldInfo at loc below root (None where loc leaves the models)."""
    model, field = root, None
    for part in loc:
        if isinstance(part, int) or is_union_tag(part):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = model_in(field.annotation) if field is not None else None
    return field


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model inside an annotation (unwrapping Optional, Union, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, (types.UnionType,)) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = model_in(arg)
            if found is not None:
                return found
    return None
