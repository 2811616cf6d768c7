"""Client-side training settings (the YAML's `federated.local` and fl/local.py's config): one definition."""

from __future__ import annotations

from pydantic import Field

from poisonlab.config.augment import Augment
from poisonlab.config.base import MAX_EPOCHS, Section


class LocalConfig(Section):
    """Client-side SGD: E local epochs of mini-batches of B, learning rate, momentum, weight decay.

    augment: random crop and flip of each client batch, drawn from the client's own generator (fl/batching.py);
    None (the default) is off.
    """

    label = "local"

    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    augment: Augment | None = None
