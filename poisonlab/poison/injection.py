"""Injection modes: how poison reaches the model.

- ``concat``: the poisoned training set (clean rows + poison rows) is used to train from scratch.
- ``fine_tune``: a model trained on CLEAN data is fine-tuned on the poison rows alone
  (clean_fraction=0) or mixed with a seeded clean_fraction of the clean rows.
Fine-tuning on a few poisoned samples typically hurts far more than diluting the same samples
in retraining (cf. Shafahi et al. 2018 on transfer learning; Gu et al. 2017 on fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.config.injection import MODES, Injection  # noqa: F401  (defined once, with the YAML's injection)
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator

def fine_tune_set(poisoned: Poisoned, clean_fraction: float, seed: int) -> Dataset:
    """The fine-tuning data: all poison rows plus a seeded clean_fraction of the clean rows."""
    clean_rows = torch.nonzero(~poisoned.mask).flatten()
    keep = choose(clean_rows, clean_fraction, None, generator(seed, "injection", "clean_mix"), "clean rows")
    rows = torch.cat([torch.nonzero(poisoned.mask).flatten(), keep])
    if len(rows) == 0:
        raise ConfigError("fine_tune injection has no rows: the poison is empty and clean_fraction is 0")
    return poisoned.data.subset(rows).replace(name=f"{poisoned.data.name}[fine_tune]")


def retrain_head(model: torch.nn.Sequential, data: Dataset, cfg, seed: int) -> torch.nn.Sequential:
    """Transfer learning: a copy of model whose feature extractor is frozen and whose last layer is
    trained further on data (features computed once; only the head's parameters change)."""
    import copy

    from poisonlab.models import split_head
    from poisonlab.training import predict_logits, train

    features, head = split_head(model)
    feats = predict_logits(features, data.x)
    head_copy = torch.nn.Sequential(copy.deepcopy(head))
    train(head_copy, Dataset(feats, data.y, data.classes, f"{data.name}[features]"), cfg, seed)
    return torch.nn.Sequential(*copy.deepcopy(features), head_copy[0])
