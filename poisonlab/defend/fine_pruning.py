"""Fine-Pruning (Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks", RAID 2018), as a registered repair defense.

The paper prunes, in increasing order of their mean activation on clean data, the channels of the
last convolutional layer (backdoor neurons are dormant on clean inputs), until clean accuracy drops,
then fine-tunes on the clean set. Here the pruned units are the inputs of the feature layer (default:
the last nn.Linear): for the zoo's global-average-pooled models (resnet, vgg) these are exactly the
last convolutional layer's channels; for ``cnn`` they are the hidden units of its penultimate layer.
``fraction`` fixes the share pruned (the paper stops at a clean-accuracy drop; ``max_drop`` does
that: the largest fraction, in steps of 5%, whose clean-set accuracy stays within max_drop of the
unpruned model's). Pruned units stay zero through fine-tuning. The work is
``poisonlab.detect.mitigation.fine_prune``.
"""

from __future__ import annotations

import torch

from poisonlab.defend.base import Defended, require
from poisonlab.defend.registry import DEFENSES
from poisonlab.detect.mitigation import _prune_count, embed, fine_prune, prune_neurons
from poisonlab.errors import check_range
from poisonlab.training import TrainConfig, evaluate


@DEFENSES.register("fine_pruning", reference="Liu, Dolan-Gavitt & Garg, Fine-Pruning, RAID 2018")
class FinePruning:
    """Prune the feature units least active on clean data, then fine-tune on the clean set."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, fraction: float | None = None, max_drop: float = 0.05, epochs: int = 2, lr: float = 0.01,
                 feature_layer: str | None = None):
        self.fraction = None if fraction is None else check_range("fraction", fraction, 0.0, 1.0)
        self.max_drop = check_range("max_drop", max_drop, 0.0, 1.0)
        self.epochs = int(check_range("epochs", epochs, 0, 1000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.feature_layer = feature_layer

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The pruned and fine-tuned copy; details: the fraction pruned."""
        require(self, model=model, clean=clean)
        fraction = self.fraction if self.fraction is not None else self._largest_fraction(model, clean)
        if self.epochs == 0:
            repaired = prune_neurons(model, self._order(model, clean)[:_prune_count(model, fraction, self.feature_layer)],
                                     self.feature_layer)
        else:
            repaired = fine_prune(model, clean, fraction, TrainConfig(epochs=self.epochs, lr=self.lr), seed,
                                  self.feature_layer)
        return Defended(repaired, details={"fraction": fraction})

    def _order(self, model, clean):
        """Feature units in increasing order of their mean activation on the clean set."""
        return torch.argsort(embed(model, clean.x, feature_layer=self.feature_layer).mean(dim=0))

    def _largest_fraction(self, model, clean) -> float:
        """The largest pruned share (steps of 5%) whose clean-set accuracy is within max_drop of the model's."""
        base = evaluate(model, clean).accuracy
        order = self._order(model, clean)
        best = 0.0
        for step in range(1, 20):
            fraction = step / 20
            pruned = prune_neurons(model, order[:_prune_count(model, fraction, self.feature_layer)], self.feature_layer)
            if base - evaluate(pruned, clean).accuracy > self.max_drop:
                break
            best = fraction
        return best
