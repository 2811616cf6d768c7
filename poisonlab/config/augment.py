"""Data augmentation settings (the YAML's `train.augment` and `federated.local.augment`): one definition.

Absent or null means off, the default. The standard CIFAR recipe is ``augment: {crop_padding: 4, flip: true}``
(data/augment.py). Leave it off for MNIST-like digits: a mirrored digit is not the same digit.
"""

from __future__ import annotations

from pydantic import Field, StrictBool

from poisonlab.config.base import Section


class Augment(Section):
    """Random crop after zero padding of crop_padding pixels per side, then a horizontal flip with probability 1/2.

    crop_padding=0 and flip=false together are the identity.
    """

    label = "augment"

    crop_padding: int = Field(4, ge=0, le=64)
    flip: StrictBool = True
