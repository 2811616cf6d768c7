"""MPAF (Cao and Gong, CVPR Workshops 2022, "MPAF: Model Poisoning Attacks to Federated Learning based on Fake Clients")."""

from __future__ import annotations

import torch

from poisonlab.errors import DataError, check_range
from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


def base_model(ctx: RoundContext, d: int, base_std: float, dtype: torch.dtype, device) -> torch.Tensor:
    """The attacker's low-accuracy base model w' (d,): ctx.extras["target_params"] if given, else
    base_std * N(0, I) drawn once from generator(seed, "attack", "mpaf") (the same every round; 0 = the zero model)."""
    given = ctx.extras.get("target_params")
    if given is not None:
        given = torch.as_tensor(given, dtype=dtype, device=device).flatten()
        if given.shape != (d,):
            raise DataError(f"extras['target_params'] has {given.numel()} values; the model has {d}")
        return given
    if base_std == 0:
        return torch.zeros(d, dtype=dtype, device=device)
    draw = torch.randn(d, generator=generator(ctx.seed, "attack", "mpaf"), dtype=dtype, device="cpu")  # on the CPU
    return base_std * draw.to(device)


@ATTACKS.register("mpaf", reference="Cao and Gong 2022, MPAF: Model Poisoning Attacks to Federated Learning based on"
                  " Fake Clients (CVPR Workshops)")
def mpaf(scale: float = 1e5, base_std: float = 0.0):
    """MPAF: each fake client sends lambda (w' - w_t), dragging the global model w_t towards a base model w'.

    lambda = scale (the paper amplifies the difference by a large factor); w' is a low-accuracy
    base model (base_model: extras["target_params"], else a fixed Gaussian draw of std base_std,
    else the zero model). Needs no honest row and no training data: the fake clients know only
    the global model ctx.global_params.
    """
    check_range("scale", scale, 0.0, low_open=True)
    check_range("base_std", base_std, 0.0)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        if ctx.global_params is None:
            raise DataError("mpaf needs ctx.global_params (the flat global model w_t); a Federation passes it")
        g = ctx.global_params.to(device=updates.device, dtype=updates.dtype).flatten()
        if g.shape != (updates.shape[1],):
            raise DataError(f"ctx.global_params has {g.numel()} values; the updates have {updates.shape[1]}")
        w = base_model(ctx, updates.shape[1], base_std, updates.dtype, updates.device)
        return rewrite(updates, malicious, scale * (w - g))

    return attack
