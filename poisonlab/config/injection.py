"""How centralized poison enters training (the YAML's `injection` and poison/injection.py's): one definition."""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field

from poisonlab.config.base import MAX_EPOCHS, Section
from poisonlab.errors import ConfigError

Mode = Literal["concat", "fine_tune"]
MODES = typing.get_args(Mode)


class Injection(Section):
    """mode concat | fine_tune; for fine_tune: clean_fraction of clean rows mixed in, epochs, lr, batch_size
    and momentum (None: the training config's), and head_only (transfer learning: features frozen, only
    the last layer is trained: the nn.Linear named feature_layer, default the last nn.Linear)."""

    label = "injection"

    mode: Mode = "concat"
    clean_fraction: float = Field(0.0, ge=0.0, le=1.0)
    epochs: int = Field(3, ge=1, le=MAX_EPOCHS)
    lr: float = Field(0.01, gt=0.0)
    batch_size: int | None = Field(None, ge=1)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    head_only: bool = False
    feature_layer: str | None = None

    @classmethod
    def from_spec(cls, spec: Injection | dict | str | None) -> Injection:
        """From an Injection, a YAML dict {mode: ..., ...}, a bare mode name, or None (concat)."""
        if spec is None:
            return cls()
        if isinstance(spec, Injection):
            return spec
        if isinstance(spec, str):
            return cls(mode=spec)
        if isinstance(spec, dict):
            return cls(**spec)
        raise ConfigError(f"injection={spec!r} is not valid; accepted: {{mode: concat}} or {{mode: fine_tune, ...}}")
