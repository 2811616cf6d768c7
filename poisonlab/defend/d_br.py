"""D-BR, backdoor removal (Chen, Wu & Wang, "Effective Backdoor Defense by Exploiting Sensitivity of Poisoned
Samples", NeurIPS 2022; official code github.com/SCLBD/Effective_backdoor_defense, unlearn_relearn.py).

1. SD module (defend/fct.py): the backdoored model's FCT score of every training row; the 5% with the highest
   score are the poisoned set D_p, the 20% with the lowest the clean set D_c.
2. BR module: a copy of the backdoored model, for ``epochs`` epochs: one epoch unlearning D_p, then one epoch
   relearning D_c (cross-entropy), SGD at lr 1e-4, momentum 0.9, weight decay 5e-4 (the official code's).

The backdoored model is the one handed to ``defend`` (in an experiment build() trained on the data with
train_cfg); without one, a fresh model is trained so first. The official code keeps the epoch with the best
test accuracy minus ASR, which needs the attack's test set; here the last epoch is returned.

Unlearning loss: the paper ascends the cross-entropy (``"ascent"``); on the small models here the poisoned
rows' cross-entropy under the backdoored model rounds to 0 and its gradient vanishes (defend/abl.py), so the
default is ``"complement"``, -log(1 - p_y), which pushes the same rows off their label without saturating.
Defaults: the paper's alpha_c = 0.2, alpha_p = 0.05, 20 epochs scaled to 10 for a CPU; lr 1e-4 with the
complementary loss was too slow on digits (10 epochs left the ASR at 98%), so lr 1e-3.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.abl import UNLEARNING_LOSSES, unlearning_objective
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.fct import check_split_ratios, distinguish, fct_scores
from poisonlab.defend.loop import minibatches
from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.training_loop import fresh_model
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.training import train


def backdoored_model(model, data, build, train_cfg, seed: int, who: str) -> nn.Module:
    """A trainable copy of the given model, or a fresh one trained on data with train_cfg when none is given."""
    if model is not None:
        return trainable_copy(model)
    fresh = fresh_model(build, who)
    train(fresh, data, train_cfg, seed=seed)
    return fresh.requires_grad_(True)


@DEFENSES.register("d_br", reference="Chen, Wu & Wang, Effective Backdoor Defense by Exploiting Sensitivity of"
                                     " Poisoned Samples, NeurIPS 2022 (D-BR)")
class DBR:
    """Split the training rows by FCT, then alternately unlearn the suspected poison and relearn the clean part."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, clean_ratio: float = 0.2, poison_ratio: float = 0.05, epochs: int = 10, lr: float = 1e-3,
                 weight_decay: float = 5e-4, batch_size: int | None = None, unlearning_loss: str = "complement"):
        self.clean_ratio, self.poison_ratio = check_split_ratios(clean_ratio, poison_ratio)
        self.epochs = int(check_range("epochs", epochs, 1, 1000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.weight_decay = check_range("weight_decay", weight_decay, 0.0, None)
        self.batch_size = None if batch_size is None else int(check_range("batch_size", batch_size, 1, None))
        if unlearning_loss not in UNLEARNING_LOSSES:
            raise ConfigError(f"unlearning_loss='{unlearning_loss}' is not known; accepted: {', '.join(UNLEARNING_LOSSES)}")
        self.unlearning_loss = unlearning_loss

    def defend(self, *, model=None, data=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """The backdoored model after unlearning D_p and relearning D_c; details: the sizes of the three sets and
        the rows taken as poisoned."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        net = backdoored_model(model, data, build, train_cfg, seed, "d_br")
        split = distinguish(fct_scores(net, data.x.to(model_device(net)), seed).cpu(), self.clean_ratio,
                            self.poison_ratio)
        self.remove(net, data.subset(split.poisoned), data.subset(split.clean), train_cfg, seed)
        return Defended(net.eval(), details={"clean": len(split.clean), "poisoned": len(split.poisoned),
                                             "uncertain": len(split.uncertain),
                                             "poisoned_rows": split.poisoned.tolist()})

    def remove(self, net: nn.Module, poisoned, clean, train_cfg, seed: int) -> None:
        """epochs x (one unlearning epoch on poisoned, one relearning epoch on clean), in place."""
        device = model_device(net)
        batch = self.batch_size or train_cfg.batch_size
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        net.train()
        for epoch in range(self.epochs):
            for x, y in minibatches(poisoned, batch, device, seed, "d-br-unlearn", epoch):
                opt.zero_grad(set_to_none=True)
                unlearning_objective(self.unlearning_loss, net(x), y).backward()
                opt.step()
            for x, y in minibatches(clean, batch, device, seed, "d-br-relearn", epoch):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                opt.step()
            progress.step(f"D-BR epoch {epoch + 1}/{self.epochs}")
