"""EP, entropy-based pruning (Zheng, Tang, Li & Liu, "Pre-activation Distributions Expose Backdoor Neurons",
NeurIPS 2022, Sec. 4.1; official code github.com/RJ-T/NIPS2022_EP_BNP, BackdoorBench's ``ep``).

On the (poisoned) training data a backdoor neuron's pre-activation is a mixture of a benign mode and a poisoned
mode; after standardisation a mixture of two separated modes has a lower differential entropy than the
(near-Gaussian, entropy-maximising) distribution of a benign neuron. EP reads, for every channel of every
batch-norm layer, each training sample's pre-activation (the batch-norm input, its maximum over spatial
positions for convolutional maps), standardises it over the samples, estimates its entropy with a histogram of
bin width ``step`` (the discrete entropy -sum p log p; the differential entropy differs by log(step), the same for
every channel), and prunes, per layer, the channels whose entropy is below mean - u * std of that layer's
entropies (the scale gamma set to 0). No clean data and no fine-tuning: EP needs the training set the model was
trained on (``data``). Defaults are the official code's: u = 3, step = 0.01 (made for 50,000 CIFAR-10 images;
with a few thousand samples a wider bin, e.g. 0.1, keeps the histogram from being one sample per bin).
Differences: the histogram's bins start at each layer's minimum as in the official code, but every value is
counted (the official code skips values that fall exactly on a bin edge and in the last, partial bin).
"""

from __future__ import annotations

import math

import torch

from poisonlab.defend.base import Defended, require
from poisonlab.defend.preactivation import per_channel, prune_channels, read_inputs
from poisonlab.defend.registry import DEFENSES
from poisonlab.errors import check_range


def histogram_entropy(values: torch.Tensor, step: float) -> torch.Tensor:
    """-sum_b p_b log p_b of each row of values (c, n), bins of width step starting at the minimum of all values."""
    index = ((values - values.min()) / step).floor().long()
    counts = torch.zeros(values.shape[0], int(index.max()) + 1, dtype=torch.float64, device=values.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    p = counts / values.shape[1]
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim=1)


def standardized(values: torch.Tensor) -> torch.Tensor:
    """Each row of values (c, n) minus its mean over n, divided by its std (a constant row becomes zeros)."""
    std = values.std(dim=1, keepdim=True)
    return (values - values.mean(dim=1, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))


def ep_entropies(model, x: torch.Tensor, step: float) -> dict[str, torch.Tensor]:
    """{batch-norm layer: the histogram entropy of each channel's standardised per-sample maximum pre-activation}."""
    peaks = read_inputs(model, x, lambda t: per_channel(t).amax(dim=2).float().cpu())
    return {name: histogram_entropy(standardized(torch.cat(parts).T.double()), step).float()
            for name, parts in peaks.items()}


@DEFENSES.register("ep", reference="Zheng, Tang, Li & Liu, Pre-activation Distributions Expose Backdoor Neurons"
                                   " (EP), NeurIPS 2022")
class EP:
    """Prune batch-norm channels whose standardised pre-activation on the training data has unusually low entropy."""

    stage = "repair"
    requires = ("model", "data")

    def __init__(self, *, u: float = 3.0, step: float = 0.01):
        self.u = check_range("u", u, 0.0, None)
        self.step = check_range("step", step, 0.0, 10.0, low_open=True)

    def defend(self, *, model=None, data=None, **_) -> Defended:
        """The pruned copy; details: how many channels were pruned, per layer and in all."""
        require(self, model=model, data=data)
        entropies = ep_entropies(model, data.x, self.step)
        chosen = {name: e < e.mean() - self.u * e.std() for name, e in entropies.items()}
        per_layer = {name: int(m.sum()) for name, m in chosen.items()}
        return Defended(prune_channels(model, chosen),
                        details={"pruned": sum(per_layer.values()), "channels": sum(len(e) for e in entropies.values()),
                                 "pruned_per_layer": [per_layer[n] for n in entropies],
                                 "max_entropy": math.log(len(data))})
