"""BNP, batch-norm statistics based pruning (Zheng, Tang, Li & Liu, "Pre-activation Distributions Expose
Backdoor Neurons", NeurIPS 2022, Sec. 4.2; official code github.com/RJ-T/NIPS2022_EP_BNP, BackdoorBench's ``bnp``).

A batch-norm layer's running statistics were accumulated on the (poisoned) training data, so for a backdoor
neuron they describe a mixture of the benign and the poisoned pre-activations, while a clean set gives the
benign moments alone. For every channel of every batch-norm layer, with (mu_1, var_1) its pre-activation mean
and variance on the defender's clean set and (mu_2, var_2) the layer's stored running mean and variance, BNP
scores the Kullback-Leibler divergence of the two Gaussians

    KL(N(mu_1, var_1) || N(mu_2, var_2)) = log(sigma_2 / sigma_1) + (var_1 + (mu_1 - mu_2)^2) / (2 var_2) - 1/2

and prunes, per layer, the channels scoring above mean + u * std of that layer's scores (the scale gamma set to 0).
No fine-tuning. Default u = 3 (the paper's and BackdoorBench's); the paper uses one batch of 500 clean images,
here the whole clean set (at most ``samples`` rows, default 500) gives the moments. Both variances are floored at
the layer's eps so a channel dead on clean data scores finite.
"""

from __future__ import annotations

import torch

from poisonlab.defend.base import Defended, require
from poisonlab.defend.preactivation import batch_norm_layers, per_channel, prune_channels, read_inputs, threshold_above
from poisonlab.defend.registry import DEFENSES
from poisonlab.errors import ConfigError, check_range


def gaussian_kl(mu_1: torch.Tensor, var_1: torch.Tensor, mu_2: torch.Tensor, var_2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_1, var_1) || N(mu_2, var_2)), elementwise."""
    return 0.5 * torch.log(var_2 / var_1) + (var_1 + (mu_1 - mu_2) ** 2) / (2 * var_2) - 0.5


def clean_moments(model, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{batch-norm layer: (mean, variance) per channel of its input over x} (population variance, float64)."""
    def sums(t):
        t = per_channel(t).double()
        return torch.stack([t.sum(dim=(0, 2)), (t * t).sum(dim=(0, 2)), torch.full_like(t[0, :, 0], t.shape[0] * t.shape[2])])

    out = {}
    for name, parts in read_inputs(model, x, sums).items():
        s, sq, n = torch.stack(parts).sum(dim=0)
        mean = s / n
        out[name] = (mean, (sq / n - mean * mean).clamp_min(0.0))
    return out


def bnp_scores(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{batch-norm layer: the KL score of each channel} between its clean moments on x and its running statistics."""
    scores = {}
    for name, layer in batch_norm_layers(model).items():
        if layer.running_mean is None:
            raise ConfigError(f"batch-norm layer '{name}' keeps no running statistics; accepted: track_running_stats=True")
    for name, (mu_1, var_1) in clean_moments(model, x).items():
        layer = batch_norm_layers(model)[name]
        eps = layer.eps
        scores[name] = gaussian_kl(mu_1, var_1.clamp_min(eps), layer.running_mean.double().to(mu_1.device),
                                   layer.running_var.double().to(mu_1.device).clamp_min(eps)).float()
    return scores


@DEFENSES.register("bnp", reference="Zheng, Tang, Li & Liu, Pre-activation Distributions Expose Backdoor Neurons"
                                    " (BNP), NeurIPS 2022")
class BNP:
    """Prune batch-norm channels whose clean pre-activation moments diverge from the stored running statistics."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, u: float = 3.0, samples: int = 500):
        self.u = check_range("u", u, 0.0, None)
        self.samples = int(check_range("samples", samples, 2, None))

    def defend(self, *, model=None, clean=None, **_) -> Defended:
        """The pruned copy; details: how many channels were pruned, per layer and in all."""
        require(self, model=model, clean=clean)
        scores = bnp_scores(model, clean.x[:self.samples])
        chosen = {name: threshold_above(s, self.u) for name, s in scores.items()}
        per_layer = {name: int(m.sum()) for name, m in chosen.items()}
        return Defended(prune_channels(model, chosen),
                        details={"pruned": sum(per_layer.values()), "channels": sum(len(s) for s in scores.values()),
                                 "pruned_per_layer": [per_layer[n] for n in scores]})
