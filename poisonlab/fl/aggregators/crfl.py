"""CRFL (Xie, Chen, Chen and Li 2021): clip and smooth the global model; certify against backdoors.

Each round, from the global model w (ctx.global_params) and the weighted mean u of the updates:
  w' = w + eta u                       (eta: ctx.server_lr, as the engine applies it)
  w' <- w' * min(1, rho / ||w'||)      (the *model's* norm is clipped, not the updates')
  w' <- w' + N(0, sigma^2 I)           (parameter smoothing; generator(seed, 'crfl', round))
and the rule answers update = (w' - w) / eta, so that the engine's w + eta * update is w'.
selected: every row; info: the model's norm before clipping, and the per-round contraction
2 Phi(rho / sigma) - 1 that enters the certificate.

The certificate (``certified_radius``, Theorem 1 of the paper, in the form of the authors'
certify code) bounds the L2 norm of the backdoor pattern the smoothed model's prediction on a test
point is robust to: with p_A / p_B lower / upper bounds on the top-two class probabilities of M
models sampled around the final model with N(0, sigma_T^2),
  RAD = sqrt( -ln(1 - (sqrt(p_A) - sqrt(p_B))^2) sigma^2
              / (2 R tau^2 L^2 sum_i p_i^2 gamma^2 eta_c^2 (q_B / n_B)^2 prod_t (2 Phi(rho_t / sigma_t) - 1)) ).
What it assumes (each a parameter of certified_radius): R attackers poison only in one round
t_adv, each with tau local iterations at learning rate eta_c, a fraction q_B / n_B of every batch
poisoned, updates scaled by gamma and aggregated with weights p_i; the per-sample loss gradient is
L-Lipschitz in the backdoor pattern (the authors' L_z); the product runs over the rounds after t_adv
(clip rho, noise sigma each) and the final smoothing (rho_T, sigma_T); the training is the convex /
smooth setting of the paper's analysis (not a guarantee for a deep network). p_A, p_B come from
Monte-Carlo sampling of smoothed models at test time (with a Hoeffding correction), which the
aggregator cannot see: certified_radius is the function a caller applies to them.
"""

from __future__ import annotations

import math

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_positive, column_chunks, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Xie, Chen, Chen and Li 2021, CRFL: Certifiably Robust Federated Learning against Backdoor"
             " Attacks (ICML)")


def contraction(rho: float, sigma: float) -> float:
    """2 Phi(rho / sigma) - 1 = erf(rho / (sigma sqrt 2)): one round's factor in the certificate (1 at sigma 0)."""
    return 1.0 if sigma == 0 else math.erf(rho / (sigma * math.sqrt(2)))


def certified_radius(p_a: float, p_b: float, *, sigma: float, rho: float, rounds_after: int, attackers: int = 1,
                     local_iters: float = 1.0, lipschitz: float = 1.0, weight_sq_sum: float = 1.0,
                     scale: float = 1.0, lr: float = 0.1, poison_fraction: float = 0.1,
                     sigma_test: float | None = None, rho_test: float | None = None) -> float:
    """CRFL's certified radius (module docstring) for one test point; inf when p_a = 1.

    rounds_after: T - t_adv - 1, the training rounds after the poisoning round t_adv before the final model
    of round T, each with clip rho and noise sigma (the authors' loop over t_adv + 1 .. T - 1); the final
    smoothing uses sigma_test / rho_test (default sigma / rho). weight_sq_sum: sum_i p_i^2 over the
    attackers' aggregation weights (1/N each for FedAvg over N clients: R / N^2)."""
    if not 0 <= p_b < p_a <= 1:
        raise ConfigError(f"crfl: certified_radius needs 0 <= p_b < p_a <= 1; got p_a={p_a!r}, p_b={p_b!r}")
    for name, value in (("sigma", sigma), ("rho", rho), ("local_iters", local_iters), ("lipschitz", lipschitz),
                        ("weight_sq_sum", weight_sq_sum), ("scale", scale), ("lr", lr),
                        ("poison_fraction", poison_fraction)):
        check_positive("crfl", name, value)
    if p_a == 1:
        return float("inf")
    sigma_test = sigma if sigma_test is None else sigma_test
    rho_test = rho if rho_test is None else rho_test
    hellinger = -math.log(1 - (math.sqrt(p_a) - math.sqrt(p_b)) ** 2) * sigma ** 2
    shrink = contraction(rho, sigma) ** int(rounds_after) * contraction(rho_test, sigma_test)
    denominator = (2 * attackers * local_iters ** 2 * lipschitz ** 2 * weight_sq_sum * scale ** 2 * lr ** 2
                   * poison_fraction ** 2 * shrink)
    return math.sqrt(hellinger / denominator)


def mean64(updates: torch.Tensor, weights: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """The weighted mean of the rows in float64 (d,), from column chunks (huge float32 rows do not overflow)."""
    k, d = updates.shape
    coef = normalized(weights).double()
    out = torch.empty(d, dtype=torch.float64, device=updates.device)
    for cols in column_chunks(k, d, 8, chunk_bytes):
        out[cols] = coef @ updates[:, cols].double()
    return out


@AGGREGATORS.register("crfl", reference=REFERENCE)
def crfl(rho: float = 15.0, sigma: float = 0.01) -> Rule:
    """CRFL: FedAvg, then the global model clipped to norm rho and smoothed with N(0, sigma^2) noise."""
    rho = check_positive("crfl", "rho", rho)
    sigma = check_positive("crfl", "sigma", sigma, allow_zero=True)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if ctx.global_params is None:
            raise ConfigError("crfl needs the global model (RoundContext.global_params, which the engines pass);"
                              " a call without a round context has none")
        eta = float(ctx.server_lr)
        if not eta > 0:
            raise ConfigError(f"crfl: server_lr={eta!r} is out of range; accepted: > 0")
        w = ctx.global_params.double()
        new = w + eta * mean64(updates, weights)
        norm = float(torch.linalg.vector_norm(new))
        new = new * min(1.0, rho / norm) if norm > 0 else new
        if sigma > 0:
            noise = torch.randn(new.shape, generator=generator(ctx.seed, "crfl", ctx.round), dtype=torch.float64,
                                device="cpu")
            new = new + sigma * noise.to(new.device)
        update = ((new - w) / eta).to(updates.dtype)
        k = updates.shape[0]
        return Aggregate(update, torch.ones(k, dtype=torch.bool, device=updates.device), None,
                         {"model_norm": norm, "clipped": norm > rho, "contraction": contraction(rho, sigma)})

    return Rule(apply, f"crfl(rho={rho}, sigma={sigma})",
                memory=lambda k, d, clients: {"crfl float64 model and chunks": 32 * d + min(CHUNK_BYTES, 8 * k * d)})
