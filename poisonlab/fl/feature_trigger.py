"""A backdoor trigger for tabular data: a few features set to a fixed value.

The tabular analogue of a BadNets patch (Gu et al. 2017): rows of (n, f) data whose features
``features`` are set to ``value``. Registered in poisonlab.poison.TRIGGERS as "features" when this
module is imported (poisonlab.fl.dba imports it), so YAML configs can name it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.triggers import TRIGGERS, Trigger


def stamp_features(x: torch.Tensor, features, value) -> torch.Tensor:
    """A copy of x (n, f) or (f,) with x[..., features] = value (a scalar or one value per feature)."""
    x = torch.as_tensor(x)
    if x.dim() not in (1, 2):
        raise ConfigError(f"feature trigger input has shape {tuple(x.shape)}; accepted: (f,) or (n, f)")
    idx = torch.as_tensor(list(features), dtype=torch.long)
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= x.shape[-1]:
        raise ConfigError(f"features={list(features)} do not index {x.shape[-1]} features; accepted: 0..{x.shape[-1] - 1}")
    out = x.clone()
    out[..., idx] = torch.as_tensor(value, dtype=x.dtype).expand(len(idx))
    return out


@TRIGGERS.register("features", reference="BadNets (Gu et al. 2017) for tabular data: fixed values on chosen features")
@dataclass(frozen=True)
class FeatureTrigger(Trigger):
    """Set the listed features of every row to value (a scalar or one value per feature)."""

    features: tuple[int, ...] = (0, 1, 2, 3)
    value: float | tuple[float, ...] = 3.0
    name = "features"

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if not isinstance(self.value, (int, float)):
            object.__setattr__(self, "value", tuple(float(v) for v in self.value))
            if len(self.value) != len(self.features):
                raise ConfigError(f"value has {len(self.value)} entries for {len(self.features)} features;"
                                  " accepted: one value, or one per feature")

    def __call__(self, x, generator=None):
        return stamp_features(x, self.features, self.value)
