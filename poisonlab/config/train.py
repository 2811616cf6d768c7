"""Centralized training settings (the YAML's `train` section and training.py's config): one definition."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from poisonlab.config.augment import Augment
from poisonlab.config.base import MAX_EPOCHS, Section


class TrainConfig(Section):
    """SGD (with momentum) or Adam hyper-parameters for centralized training.

    lr_schedule cosine: lr annealed to 0 over all steps (training.lr_at). augment: random crop and flip of each
    batch (config/augment.py, data/augment.py); None (the default) is off.
    """

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr_schedule: Literal["constant", "cosine"] = "constant"
    augment: Augment | None = None
