"""split_head: a poisonlab model's feature extractor and its final linear classifier."""

from __future__ import annotations

from torch import nn

from poisonlab.errors import ConfigError


def split_head(model: nn.Sequential) -> tuple[nn.Sequential, nn.Linear]:
    """(feature extractor, final linear head) of a poisonlab model; shares parameters."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ConfigError(f"model {type(model).__name__} has no final nn.Linear head; accepted: poisonlab models")
    return model[:-1], model[-1]
