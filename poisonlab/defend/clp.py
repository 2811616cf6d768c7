"""Channel Lipschitzness-based Pruning, CLP (Zheng, Zhang, Wang, Ding & Yu, "Data-Free Backdoor Removal
based on Channel Lipschitzness", ECCV 2022), as a registered, data-free repair defense.

Every output channel k of a convolution followed by batch norm computes
``gamma_k / std_k * (W_k * x) + const``, whose Lipschitz constant is bounded by the channel's
upper bound UCLC_k = sigma_max(W_k * |gamma_k| / std_k), W_k the (in, kh*kw) matrix of its kernel
and std_k = sqrt(running_var_k) (the paper's code; no eps). Backdoor channels have unusually large
bounds: in each layer the channels with UCLC_k > mean + u * std (over the layer's channels) are
pruned (the batch norm's weight and bias set to 0). The paper's u is 3 (its Fig. 5 sweeps 0-5).

Pairing: each BatchNorm2d is matched with the most recent not yet matched Conv2d with as many output
channels, in ``named_modules()`` order (the paper's code pairs a batch norm with the conv before it).
A convolution with no batch norm after it (the zoo's ``cnn``) is scored alone (gamma/std = 1) and its
channel pruned by zeroing that output channel's kernel and bias: an extension for batch-norm-free
models, which the paper does not cover. Only the model is needed (no data).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab.defend.base import Defended, require
from poisonlab.defend.registry import DEFENSES
from poisonlab.errors import check_range


def uclc(weight: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per output channel k: sigma_max(weight[k] reshaped (in, kh*kw)) * |scale[k]| (scale None: 1)."""
    mats = weight.detach().reshape(weight.shape[0], weight.shape[1], -1).float().cpu()
    sigma = torch.linalg.matrix_norm(mats, ord=2)
    return sigma if scale is None else sigma * scale.detach().float().cpu().abs()


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """(conv, its batch norm or None) for every Conv2d of model, in named_modules() order (only affine batch
    norms with running statistics are matched)."""
    pairs: list[list] = []
    for _, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pairs.append([module, None])
        elif isinstance(module, nn.BatchNorm2d) and module.affine and module.running_var is not None:
            match = next((p for p in reversed(pairs) if p[1] is None and p[0].out_channels == module.num_features), None)
            if match is not None:
                match[1] = module
    return [(c, b) for c, b in pairs]


def outliers(scores: torch.Tensor, u: float) -> torch.Tensor:
    """Channels whose score exceeds the layer's mean + u * std (unbiased std, as torch.std in the paper's code)."""
    if len(scores) < 2:
        return torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    return scores > scores.mean() + u * scores.std()


@DEFENSES.register("clp", reference="Zheng, Zhang, Wang, Ding & Yu, Data-Free Backdoor Removal based on Channel"
                   " Lipschitzness, ECCV 2022")
class CLP:
    """Prune, per layer, the conv channels whose Lipschitz upper bound is an outlier (data-free)."""

    stage = "repair"
    requires = ("model",)

    def __init__(self, *, u: float = 3.0):
        self.u = check_range("u", u, 0.0, None)

    def defend(self, *, model=None, **_) -> Defended:
        """The pruned copy; details: channels pruned and scored."""
        require(self, model=model)
        repaired = copy.deepcopy(model)
        pruned = total = 0
        with torch.no_grad():
            for conv, bn in conv_bn_pairs(repaired):
                scale = None if bn is None else bn.weight / bn.running_var.sqrt()
                flag = outliers(uclc(conv.weight, scale), self.u).to(conv.weight.device)
                target = bn if bn is not None else conv
                target.weight[flag] = 0.0
                if target.bias is not None:
                    target.bias[flag] = 0.0
                pruned, total = pruned + int(flag.sum()), total + len(flag)
        return Defended(repaired, details={"pruned": pruned, "channels": total})
