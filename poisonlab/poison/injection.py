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


def retrain_head(model: torch.nn.Module, data: Dataset, cfg, seed: int,
                 feature_layer: str | None = None) -> torch.nn.Module:
    """Transfer learning: a copy of model whose feature extractor is frozen and whose head, the nn.Linear
    named feature_layer (default: the last nn.Linear), is trained further on data (features computed
    once, as that layer's input; only the head's parameters change). Any nn.Module whose head is an
    nn.Linear fed by the features works."""
    import copy

    from poisonlab.models import FeatureExtractor, linear_head
    from poisonlab.training import predict_logits, train

    name, head = linear_head(model, feature_layer)
    feats = predict_logits(FeatureExtractor(model, name), data.x)
    head_copy = torch.nn.Sequential(copy.deepcopy(head))
    train(head_copy, Dataset(feats, data.y, data.classes, f"{data.name}[features]"), cfg, seed)
    tuned = copy.deepcopy(model)
    tuned.get_submodule(name).load_state_dict(head_copy[0].state_dict())
    return tuned
